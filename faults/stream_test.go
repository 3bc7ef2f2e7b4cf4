package faults_test

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// websocketGUID is the key suffix of RFC 6455 section 1.3.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func websocketAccept(key string) string {
	sum := sha1.Sum([]byte(key + websocketGUID))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// writeFrame writes one unfragmented text frame of under 126 bytes,
// masked as RFC 6455 section 5.3 requires of clients when mask is set.
func writeFrame(w io.Writer, payload string, mask bool) error {
	if len(payload) >= 126 {
		return fmt.Errorf("payload of %d bytes is too long for this helper", len(payload))
	}
	frame := []byte{0x81, byte(len(payload))}
	data := []byte(payload)
	if mask {
		key := [4]byte{0x12, 0x34, 0x56, 0x78}
		frame[1] |= 0x80
		frame = append(frame, key[:]...)
		for i := range data {
			data[i] ^= key[i%4]
		}
	}
	_, err := w.Write(append(frame, data...))
	return err
}

// readFrame reads one unfragmented frame of under 126 bytes and returns
// its unmasked payload.
func readFrame(r io.Reader) (string, error) {
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return "", err
	}
	n := int(head[1] & 0x7f)
	if n >= 126 {
		return "", fmt.Errorf("frame length code %d is not supported by this helper", n)
	}
	var key [4]byte
	masked := head[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return "", err
		}
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return "", err
	}
	if masked {
		for i := range data {
			data[i] ^= key[i%4]
		}
	}
	return string(data), nil
}

func TestWebSocketUpgrade(t *testing.T) {
	watch := newLeakWatch()
	watch.add("ws-client-credential")
	endpoint := newTokenEndpoint(t, watch)
	up := newUpstream(t)
	upstreamErr := make(chan error, 1)
	up.setHandler(func(w http.ResponseWriter, r *http.Request, rec upstreamRequest) {
		upstreamErr <- serveEcho(w, r)
	})
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL}, watch)
	s.awaitReady(t)

	conn := dial(t, s.Addr)
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	_, err := io.WriteString(conn, "GET /ws/chat HTTP/1.1\r\nHost: sidecar\r\n"+
		"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Key: "+key+"\r\nAuthorization: Bearer ws-client-credential\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read upgrade response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status = %d; want 101", resp.StatusCode)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != websocketAccept(key) {
		t.Errorf("Sec-WebSocket-Accept = %q; want %q", got, websocketAccept(key))
	}

	// The client speaks first, then the upstream pushes a frame of its own.
	if err := writeFrame(conn, "hello from the client", true); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"echo: hello from the client", "pushed by the upstream"} {
		got, err := readFrame(br)
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		if got != want {
			t.Errorf("frame = %q; want %q", got, want)
		}
	}
	conn.Close()
	if err := <-upstreamErr; err != nil {
		t.Errorf("upstream: %v", err)
	}

	got := up.received()
	if len(got) != 1 {
		t.Fatalf("upstream received %d requests; want 1", len(got))
	}
	if n := len(got[0].Authorization); n != 1 {
		t.Fatalf("upgrade request carried %d Authorization values; want 1", n)
	}
	if got[0].Authorization[0] != "Bearer "+endpoint.token(0) {
		t.Error("upgrade request Authorization is not the sidecar's token")
	}
	if v := got[0].Header.Get("Upgrade"); v != "websocket" {
		t.Errorf("upstream Upgrade = %q; want websocket", v)
	}
	awaitCount(t, s.Metrics.Requests.WithLabelValues("get", "101"), 1, `authproxy_requests_total{method="get",code="101"}`)
}

// serveEcho completes a WebSocket handshake, echoes one client frame and
// then sends one frame of its own.
func serveEcho(w http.ResponseWriter, r *http.Request) error {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "not an upgrade", http.StatusBadRequest)
		return errors.New("request is not a WebSocket upgrade")
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return fmt.Errorf("hijack: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		websocketAccept(r.Header.Get("Sec-WebSocket-Key")))
	if err := rw.Flush(); err != nil {
		return err
	}
	msg, err := readFrame(rw)
	if err != nil {
		return fmt.Errorf("read client frame: %w", err)
	}
	if err := writeFrame(conn, "echo: "+msg, false); err != nil {
		return err
	}
	return writeFrame(conn, "pushed by the upstream", false)
}

// TestStreamingFlushesEachEvent makes the upstream wait, before each
// event, until the client has received the previous one. A sidecar that
// buffered the response would deadlock this exchange and fail it.
func TestStreamingFlushesEachEvent(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
	}{
		{"server-sent events", "text/event-stream"},
		{"chunked octet stream", "application/octet-stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			watch := newLeakWatch()
			endpoint := newTokenEndpoint(t, watch)
			up := newUpstream(t)
			const events = 3
			received := make(chan struct{})
			up.setHandler(func(w http.ResponseWriter, r *http.Request, rec upstreamRequest) {
				w.Header().Set("Content-Type", tt.contentType)
				w.Header().Set("Cache-Control", "no-cache")
				rc := http.NewResponseController(w)
				for i := range events {
					if i > 0 {
						select {
						case <-received:
						case <-time.After(5 * time.Second):
							return
						}
					}
					fmt.Fprintf(w, "data: event %d\n\n", i)
					if err := rc.Flush(); err != nil {
						return
					}
				}
			})
			s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL}, watch)
			client := newClient(t)

			resp, err := client.Get(s.URL + "/api/events")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d; want 200", resp.StatusCode)
			}
			if resp.ContentLength != -1 {
				t.Errorf("ContentLength = %d; want -1, a streamed response", resp.ContentLength)
			}
			lines := make(chan string)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					if sc.Text() != "" {
						lines <- sc.Text()
					}
				}
			}()
			for i := range events {
				select {
				case line := <-lines:
					if want := fmt.Sprintf("data: event %d", i); line != want {
						t.Fatalf("line = %q; want %q", line, want)
					}
				case <-time.After(3 * time.Second):
					t.Fatalf("event %d did not reach the client within 3s; the sidecar buffers the stream", i)
				}
				if i < events-1 {
					received <- struct{}{}
				}
			}
			for range lines {
			}
		})
	}
}
