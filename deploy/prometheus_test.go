package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// requirePrometheusTool returns the path of a binary from Debian's
// prometheus package. Without it the test fails, unless
// AUTHPROXY_SKIP_PROMETHEUS=1 makes it skip.
func requirePrometheusTool(t *testing.T, name string) string {
	t.Helper()
	if os.Getenv("AUTHPROXY_SKIP_PROMETHEUS") == "1" {
		t.Skip("skipped because AUTHPROXY_SKIP_PROMETHEUS=1")
	}

	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}

	t.Fatalf("%s not found in PATH: install it with `apt-get install prometheus` (Debian), or set AUTHPROXY_SKIP_PROMETHEUS=1 to skip this test", name)

	return ""
}

// prometheusServer is a Prometheus process on 127.0.0.1.
type prometheusServer struct {
	url    string
	output *lockedBuffer
}

// startPrometheus runs Prometheus with a 1-second scrape of target (a
// host:port) and the alerting rules of the PrometheusRule, and waits until
// /-/ready returns 200.
func startPrometheus(t *testing.T, binary, target string) *prometheusServer {
	t.Helper()

	dir := t.TempDir()

	rules, err := prometheusRuleSpec()
	if err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}

	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: authproxy
    static_configs:
      - targets: [%q]
`, filepath.Join(dir, "rules.yaml"), target)

	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}

	addr := freeLoopbackAddr(t)
	output := &lockedBuffer{}

	cmd := exec.Command(binary,
		"--config.file="+configFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout = output
	cmd.Stderr = output

	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)

		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	server := &prometheusServer{url: "http://" + addr, output: output}

	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("prometheus exited before it was ready: %v; output:\n%s", err, output.String())
		default:
		}

		response, err := http.Get(server.url + "/-/ready")
		if err == nil {
			response.Body.Close()

			if response.StatusCode == http.StatusOK {
				return server
			}
		}

		time.Sleep(100 * time.Millisecond)
	}

	t.Fatalf("prometheus was not ready within 30s; output:\n%s", output.String())

	return nil
}

// prometheusRuleSpec returns the spec of the PrometheusRule as a plain
// Prometheus rule file, the way scripts/check-deploy.sh extracts it.
func prometheusRuleSpec() (string, error) {
	data, err := os.ReadFile("monitoring/prometheusrule.yaml")
	if err != nil {
		return "", err
	}

	_, spec, found := strings.Cut(string(data), "\nspec:\n")
	if !found {
		return "", fmt.Errorf("monitoring/prometheusrule.yaml has no top-level spec")
	}

	var lines []string
	for _, line := range strings.Split(spec, "\n") {
		lines = append(lines, strings.TrimPrefix(line, "  "))
	}

	return strings.Join(lines, "\n"), nil
}

type querySample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// query runs an instant query and returns its samples, or an error that
// includes Prometheus's message.
func (p *prometheusServer) query(expr string) ([]querySample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	request, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	if err != nil {
		return nil, err
	}

	response, err := http.DefaultClient.Do(request)
	if err != nil {
		return nil, err
	}
	defer response.Body.Close()

	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string        `json:"resultType"`
			Result     []querySample `json:"result"`
		} `json:"data"`
	}

	if err := json.NewDecoder(response.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("decode response to %q: %w", expr, err)
	}

	if body.Status != "success" {
		return nil, fmt.Errorf("query %q failed: %s", expr, body.Error)
	}

	if body.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q returned a %s, expected a vector", expr, body.Data.ResultType)
	}

	return body.Data.Result, nil
}

func sampleValue(sample querySample) float64 {
	text, _ := sample.Value[1].(string)
	value, _ := strconv.ParseFloat(text, 64)

	return value
}

// waitForValue polls expr until it returns one sample for which accept
// returns true, for at most 30 seconds, and returns that value.
func (p *prometheusServer) waitForValue(t *testing.T, expr string, accept func(float64) bool) float64 {
	t.Helper()

	var last string

	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		samples, err := p.query(expr)

		switch {
		case err != nil:
			last = err.Error()
		case len(samples) != 1:
			last = fmt.Sprintf("%d samples", len(samples))
		case accept(sampleValue(samples[0])):
			return sampleValue(samples[0])
		default:
			last = fmt.Sprintf("value %v", sampleValue(samples[0]))
		}

		time.Sleep(250 * time.Millisecond)
	}

	t.Fatalf("%s: no accepted value within 30s; last result: %s; prometheus output:\n%s", expr, last, p.output.String())

	return 0
}

// TestPrometheusScrapesSidecar runs a real Prometheus against a running
// sidecar and checks the scraped values, the dashboard queries and the
// alerts on a healthy sidecar, and lints /metrics with promtool.
func TestPrometheusScrapesSidecar(t *testing.T) {
	prometheusBinary := requirePrometheusTool(t, "prometheus")
	promtool := requirePrometheusTool(t, "promtool")

	upstream := startTaskmaster(t)

	s := startSidecar(t, map[string]string{
		"CLIENT_ID":          testClientID,
		"CLIENT_SECRET_FILE": writeSecretFile(t),
		"UPSTREAM_URL":       upstream.URL,
		"LOG_LEVEL":          "warn",
	})
	s.waitReady(t)

	const requests = 3
	for range requests {
		if status, body := s.get(t, s.proxyURL+"/api/tasks"); status != http.StatusOK {
			t.Fatalf("GET /api/tasks returned %d (%s), expected 200", status, body)
		}
	}

	prometheus := startPrometheus(t, prometheusBinary, strings.TrimPrefix(s.adminURL, "http://"))

	t.Run("token expiry", func(t *testing.T) {
		now := float64(time.Now().Unix())

		// The Taskmaster issues tokens for an hour.
		expiry := prometheus.waitForValue(t, `authproxy_token_expiry_timestamp_seconds{job="authproxy"}`,
			func(value float64) bool { return value > 0 })
		if expiry < now+50*60 || expiry > now+61*60 {
			t.Errorf("authproxy_token_expiry_timestamp_seconds is %.0f, expected about an hour after %.0f", expiry, now)
		}

		prometheus.waitForValue(t, `authproxy_token_valid{job="authproxy"}`,
			func(value float64) bool { return value == 1 })
	})

	t.Run("request count", func(t *testing.T) {
		prometheus.waitForValue(t, `sum(authproxy_requests_total{job="authproxy", code="200"})`,
			func(value float64) bool { return value == requests })

		prometheus.waitForValue(t, `sum(authproxy_token_fetches_total{job="authproxy", outcome="success"})`,
			func(value float64) bool { return value >= 1 })
	})

	t.Run("dashboard queries", func(t *testing.T) {
		replacer := strings.NewReplacer("$namespace", ".*", "$pod", ".*", "$__rate_interval", "1m")

		for _, expr := range dashboardQueries(t) {
			if _, err := prometheus.query(replacer.Replace(expr)); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("alerts silent", func(t *testing.T) {
		// Rule expressions return no sample while the sidecar is healthy.
		for _, rule := range alertRules(t) {
			samples, err := prometheus.query(fieldString(rule, "expr"))
			if err != nil {
				t.Errorf("%s: %v", fieldString(rule, "alert"), err)
				continue
			}

			if len(samples) != 0 {
				t.Errorf("%s matches a healthy sidecar: %v", fieldString(rule, "alert"), samples)
			}
		}
	})

	t.Run("promtool check metrics", func(t *testing.T) {
		status, exposition := s.get(t, s.adminURL+"/metrics")
		if status != http.StatusOK {
			t.Fatalf("GET /metrics returned %d", status)
		}

		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(exposition)

		var output bytes.Buffer
		cmd.Stdout = &output
		cmd.Stderr = &output

		if err := cmd.Run(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, output.String())
		}
	})
}
