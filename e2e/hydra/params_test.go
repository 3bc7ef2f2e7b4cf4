package hydra_test

import (
	"net/url"
	"slices"
	"testing"

	"github.com/authproxy/authproxy/internal/hydratest"
)

// TestTokenRequestParameters checks that SCOPES, AUDIENCE and TOKEN_PARAMS
// reach Hydra. Introspection shows the scopes and the audience in the
// token. Hydra v2.3.0 ignores parameters it does not know and keeps no
// trace of them, so a recording proxy in front of its token endpoint shows
// that the extra parameter was in the form.
func TestTokenRequestParameters(t *testing.T) {
	const audience = "https://tasks.example"
	h := hydratest.Start(t)
	up := hydratest.NewIntrospectingUpstream(t, h)
	recorder := newRecordingProxy(t, h.PublicURL())
	client := h.CreateClient(t, hydratest.ClientSpec{
		ID:       "scoped-client",
		Secret:   "scoped-secret",
		Scopes:   []string{"tasks.read", "tasks.write", "tasks.admin"},
		Audience: []string{audience, "https://other.example"},
	})

	env := sidecarEnv(h, up, client)
	env["TOKEN_URL"] = recorder.URL() + "/oauth2/token"
	env["SCOPES"] = "tasks.read tasks.write"
	env["AUDIENCE"] = audience
	env["TOKEN_PARAMS"] = "tenant=acme+corp&region=eu-west"
	s := startSidecar(t, env)

	got := s.getTasks(t)
	if want := []string{"tasks.read", "tasks.write"}; !slices.Equal(sorted(got.Scopes), want) {
		t.Errorf("token scopes: got %q; want %q", got.Scopes, want)
	}
	if want := []string{audience}; !slices.Equal(got.Audience, want) {
		t.Errorf("token audience: got %q; want %q", got.Audience, want)
	}

	requests := recorder.Requests("/oauth2/token")
	if len(requests) != 1 {
		t.Fatalf("token requests: got %d; want 1", len(requests))
	}
	form := requests[0].Form
	if requests[0].Status != 200 {
		t.Errorf("token response status: got %d; want 200", requests[0].Status)
	}
	want := url.Values{
		"grant_type": {"client_credentials"},
		"scope":      {"tasks.read tasks.write"},
		"audience":   {audience},
		"tenant":     {"acme corp"},
		"region":     {"eu-west"},
	}
	for key, values := range want {
		if !slices.Equal(form[key], values) {
			t.Errorf("token request form %s: got %q; want %q", key, form[key], values)
		}
	}
	if form.Has("client_secret") {
		t.Error("token request form has client_secret; client_secret_basic sends it only in the Authorization header")
	}
}

func sorted(values []string) []string {
	out := slices.Clone(values)
	slices.Sort(out)
	return out
}
