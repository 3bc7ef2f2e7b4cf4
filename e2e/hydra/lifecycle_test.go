package hydra_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/authproxy/authproxy/internal/hydratest"
)

// shortLifetimeEnv sets the token schedule for tokens that live a few
// seconds: refresh at least 1 s before expiry and stop sending a token
// 500 ms before it.
func shortLifetimeEnv(env map[string]string) map[string]string {
	env["TOKEN_REFRESH_MIN_MARGIN"] = "1s"
	env["TOKEN_EXPIRY_LEEWAY"] = "500ms"
	return env
}

// TestShortLifetimeRefresh keeps traffic running across more than four
// lifetimes of 3-second tokens. Every request must succeed, each token must
// be replaced by the background refresh before it expires, and the sidecar
// must fetch about one token per refresh, not one per request.
func TestShortLifetimeRefresh(t *testing.T) {
	const (
		lifespan = 3 * time.Second
		duration = 4*lifespan + time.Second
	)
	h := hydratest.Start(t)
	up := hydratest.NewIntrospectingUpstream(t, h)
	client := h.CreateClient(t, hydratest.ClientSpec{ID: "short-lived", Secret: "short-lived-secret"})
	h.SetClientLifespan(t, client.ID, lifespan)
	s := startSidecar(t, shortLifetimeEnv(sidecarEnv(h, up, client)))
	s.waitReady(t)

	tr := startTraffic(s, 2)
	time.Sleep(duration) // the traffic runs for this long
	tr.stop()

	total, ok, failures := tr.counts()
	if ok != total {
		t.Errorf("responses with status 200: got %d of %d; want all; first failures:\n%s", ok, total, strings.Join(failures, "\n"))
	}
	if _, ok := s.findLog("token expired without a successful refresh; requests get 503 until a token is obtained"); ok {
		t.Error("a token expired before the background refresh replaced it")
	}
	// NOTE: Hydra v2.3.0 with DSN=memory sometimes reports a valid token as
	// inactive while it issues another token. On a 2-core machine, 1 to 4
	// of about 350 introspections did so while 40 tokens were issued. The
	// sidecar then forces a refresh and replays the request, so a few 401s
	// at the upstream are allowed, but callers must still get 200.
	if rejected := up.Rejected(); rejected > 3 {
		t.Errorf("requests the upstream rejected with 401: got %d; want at most 3", rejected)
	}

	// Hydra reports expires_in in whole seconds, rounded down, so a 3 s
	// token is reported to live 2 or 3 s. The sidecar refreshes it 1 or 2 s
	// after it was obtained, which makes 6 to 13 refreshes in 13 s. The
	// bounds add the first fetch and some room for a loaded machine.
	fetches := s.metric(t, "authproxy_token_fetches_total", map[string]string{"outcome": "success"})
	t.Logf("%d requests and %v token fetches in %v", total, fetches, duration)
	if minFetches, maxFetches := 5.0, 18.0; fetches < minFetches || fetches > maxFetches {
		t.Errorf("successful token fetches in %v: got %v; want between %v and %v", duration, fetches, minFetches, maxFetches)
	}
	if failed := s.metric(t, "authproxy_token_fetches_total", map[string]string{"outcome": "failure"}); failed != 0 {
		t.Errorf("failed token fetches: got %v; want 0", failed)
	}
	if total < 20*int(fetches) {
		t.Errorf("requests per token fetch: got %d requests for %v fetches; want at least 20 requests per fetch", total, fetches)
	}
	if forced := s.metric(t, "authproxy_token_forced_refreshes_total", nil); forced > 3 {
		t.Errorf("forced refreshes: got %v; want at most 3, since the background refresh must replace each token in time", forced)
	}
}

// TestRevocationDuringTraffic revokes the sidecar's token at Hydra's RFC 7009
// endpoint twice: once under GET traffic and once before a POST with a
// body. The upstream then rejects the token with 401, and the sidecar must
// fetch one new token and replay the request, so that every caller gets 200.
func TestRevocationDuringTraffic(t *testing.T) {
	h := hydratest.Start(t)
	up := hydratest.NewIntrospectingUpstream(t, h)
	recorder := newRecordingProxy(t, up.URL())
	client := h.CreateClient(t, hydratest.ClientSpec{ID: "revoked-client", Secret: "revoked-secret"})

	env := sidecarEnv(h, up, client)
	env["UPSTREAM_URL"] = recorder.URL()
	env["TOKEN_FORCED_REFRESH_INTERVAL"] = "1s"
	s := startSidecar(t, env)
	s.waitReady(t)
	refreshed := map[string]string{"result": "refreshed"}

	t.Run("GET traffic", func(t *testing.T) {
		tr := startTraffic(s, 2)
		defer tr.stop()
		waitFor(t, 5*time.Second, "the upstream accepts 20 requests", func() bool { return up.Accepted() >= 20 })

		before := s.metric(t, "authproxy_token_forced_refreshes_total", refreshed)
		replaysBefore := s.metric(t, "authproxy_replays_total", map[string]string{"result": "replayed"})
		h.Revoke(t, client.ID, client.Secret, currentToken(t, up))
		waitFor(t, 5*time.Second, "a forced refresh", func() bool {
			return s.metric(t, "authproxy_token_forced_refreshes_total", refreshed) > before
		})
		accepted := up.Accepted()
		waitFor(t, 5*time.Second, "the upstream accepts 20 more requests", func() bool { return up.Accepted() >= accepted+20 })
		tr.stop()

		total, ok, failures := tr.counts()
		if ok != total {
			t.Errorf("responses with status 200: got %d of %d; want all; first failures:\n%s", ok, total, strings.Join(failures, "\n"))
		}
		if delta := s.metric(t, "authproxy_token_forced_refreshes_total", refreshed) - before; delta < 1 || delta > 2 {
			t.Errorf("forced refreshes after one revocation: got %v; want 1 or 2", delta)
		}
		if delta := s.metric(t, "authproxy_replays_total", map[string]string{"result": "replayed"}) - replaysBefore; delta < 1 {
			t.Errorf("replayed requests after the revocation: got %v; want at least 1", delta)
		}
	})

	t.Run("POST with body", func(t *testing.T) {
		// Wait out TOKEN_FORCED_REFRESH_INTERVAL since the last forced
		// refresh, so that the next 401 may force one.
		time.Sleep(1100 * time.Millisecond)
		before := s.metric(t, "authproxy_token_forced_refreshes_total", refreshed)
		h.Revoke(t, client.ID, client.Secret, currentToken(t, up))

		body := []byte(`{"title":"prove token revocation","done":false}`)
		resp := s.do(t, http.MethodPost, "/api/tasks", body)
		if resp.Status != http.StatusOK {
			t.Fatalf("POST /api/tasks status: got %d; want 200; body: %s", resp.Status, resp.Body)
		}
		if delta := s.metric(t, "authproxy_token_forced_refreshes_total", refreshed) - before; delta != 1 {
			t.Errorf("forced refreshes after the revocation: got %v; want 1", delta)
		}

		posts := recorder.Requests("/api/tasks")
		posts = filterMethod(posts, http.MethodPost)
		if len(posts) != 2 {
			t.Fatalf("POST requests at the upstream: got %d; want 2, the rejected one and its replay", len(posts))
		}
		for i, want := range []int{http.StatusUnauthorized, http.StatusOK} {
			if posts[i].Status != want {
				t.Errorf("POST %d upstream status: got %d; want %d", i+1, posts[i].Status, want)
			}
			if !bytes.Equal(posts[i].Body, body) {
				t.Errorf("POST %d body at the upstream: got %q; want %q", i+1, posts[i].Body, body)
			}
		}
		if posts[0].Header.Get("Authorization") == posts[1].Header.Get("Authorization") {
			t.Error("the replayed POST carried the revoked token; want a new one")
		}
	})
}

// currentToken returns the bearer token of the last request the upstream
// received, which is the token the sidecar holds.
func currentToken(t *testing.T, up *hydratest.Upstream) string {
	t.Helper()
	req := up.LastRequest()
	if req == nil {
		t.Fatal("the upstream has received no request with a bearer token")
	}
	token, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		t.Fatal("the upstream's last request has no bearer token")
	}
	return token
}

func filterMethod(requests []recordedRequest, method string) []recordedRequest {
	var out []recordedRequest
	for _, r := range requests {
		if r.Method == method {
			out = append(out, r)
		}
	}
	return out
}

// TestSecretFileRotation rotates the client secret in Hydra and then in a
// Kubernetes-style secret volume, where the file is a symlink through
// ..data to a timestamped directory and an update swaps ..data atomically.
// With 3-second tokens, the sidecar must fail with the old secret and then
// recover with the new one without a restart.
func TestSecretFileRotation(t *testing.T) {
	h := hydratest.Start(t)
	up := hydratest.NewIntrospectingUpstream(t, h)
	client := h.CreateClient(t, hydratest.ClientSpec{ID: "rotating-client", Secret: "secret-before-rotation"})
	h.SetClientLifespan(t, client.ID, 3*time.Second)

	volume := newSecretVolume(t, "client-secret", client.Secret)
	env := shortLifetimeEnv(sidecarEnv(h, up, client))
	delete(env, "CLIENT_SECRET")
	env["CLIENT_SECRET_FILE"] = filepath.Join(volume.dir, "client-secret")
	env["TOKEN_RETRY_MIN"] = "250ms"
	env["TOKEN_RETRY_MAX"] = "2s"
	env["TOKEN_FORCED_REFRESH_INTERVAL"] = "1s"
	s := startSidecar(t, env)
	s.getTasks(t)

	const newSecret = "secret-after-rotation"
	h.SetClientSecret(t, client.ID, newSecret)
	status := waitForFailedFetch(t, s)
	if status.LastErrorCode != "invalid_client" {
		t.Errorf("/tokenz last_error_code with the old secret: got %q; want invalid_client", status.LastErrorCode)
	}

	swapped := time.Now()
	volume.update(t, newSecret)
	waitFor(t, 15*time.Second, "/tokenz reports a token fetched after the secret file changed", func() bool {
		status = s.tokenz(t)
		return status.LastOutcome == "success" && status.LastSuccess != nil && status.LastSuccess.After(swapped)
	})
	got := s.getTasks(t)
	if got.ClientID != client.ID {
		t.Errorf("token client_id: got %q; want %q", got.ClientID, client.ID)
	}
	if !s.running() {
		t.Error("the sidecar exited during the rotation")
	}
	if strings.Contains(s.log.String(), client.Secret) {
		t.Error("the sidecar log contains the secret before the rotation")
	}
	if strings.Contains(s.log.String(), newSecret) {
		t.Error("the sidecar log contains the secret after the rotation")
	}
}

// secretVolume lays out a directory the way the kubelet mounts a Secret: the
// data lives in a timestamped directory, ..data is a symlink to it, and each
// key is a symlink through ..data.
type secretVolume struct {
	dir     string
	key     string
	version int
}

func newSecretVolume(t *testing.T, key, value string) *secretVolume {
	t.Helper()
	v := &secretVolume{dir: t.TempDir(), key: key}
	v.update(t, value)
	if err := os.Symlink(filepath.Join("..data", key), filepath.Join(v.dir, key)); err != nil {
		t.Fatalf("create the %s symlink: %v", key, err)
	}
	return v
}

// update writes value into a new timestamped directory and points ..data
// at it with one rename, which replaces the old symlink atomically.
func (v *secretVolume) update(t *testing.T, value string) {
	t.Helper()
	v.version++
	dataDir := fmt.Sprintf("..2025_01_01_00_00_%02d.%d", v.version, v.version)
	if err := os.Mkdir(filepath.Join(v.dir, dataDir), 0o755); err != nil {
		t.Fatalf("create %s: %v", dataDir, err)
	}
	if err := os.WriteFile(filepath.Join(v.dir, dataDir, v.key), []byte(value+"\n"), 0o600); err != nil {
		t.Fatalf("write the secret: %v", err)
	}
	tmpLink := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(dataDir, tmpLink); err != nil {
		t.Fatalf("create ..data_tmp: %v", err)
	}
	if err := os.Rename(tmpLink, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatalf("swap ..data: %v", err)
	}
}
