package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// sidecarCounters are the sidecar metrics that show whether the token
// refresh and the 401 replay ran during the load.
type sidecarCounters struct {
	fetchSuccess float64
	fetchFailure float64
	replays      float64
	// errorResponses counts responses with a status of 400 or more, except
	// 499, which the sidecar records when wrk closes its connections with
	// requests in flight at the end of each run.
	errorResponses float64
}

func (c sidecarCounters) minus(o sidecarCounters) sidecarCounters {
	return sidecarCounters{
		fetchSuccess:   c.fetchSuccess - o.fetchSuccess,
		fetchFailure:   c.fetchFailure - o.fetchFailure,
		replays:        c.replays - o.replays,
		errorResponses: c.errorResponses - o.errorResponses,
	}
}

// sidecarCounters reads the counters of every sidecar from its admin port.
func (b *bench) sidecarCounters(ctx context.Context) (map[string]sidecarCounters, error) {
	counters := map[string]sidecarCounters{}
	for _, t := range b.targets {
		if t.adminURL == "" {
			continue
		}
		text, err := fetchMetrics(ctx, t.adminURL+"/metrics")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.name, err)
		}
		counters[t.name] = parseCounters(text)
	}
	return counters, nil
}

func fetchMetrics(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("read metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return "", fmt.Errorf("read metrics from %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("read metrics from %s: status %s", url, resp.Status)
	}
	return string(body), nil
}

// parseCounters sums the series of interest in a Prometheus text
// exposition.
func parseCounters(text string) sidecarCounters {
	var c sidecarCounters
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		series, value, ok := cutValue(line)
		if !ok {
			continue
		}
		name, labels, _ := strings.Cut(series, "{")
		switch {
		case name == "authproxy_token_fetches_total" && strings.Contains(labels, `outcome="success"`):
			c.fetchSuccess += value
		case name == "authproxy_token_fetches_total":
			c.fetchFailure += value
		case name == "authproxy_replays_total":
			c.replays += value
		case name == "authproxy_requests_total" && isErrorCode(labels):
			c.errorResponses += value
		}
	}
	return c
}

// cutValue splits a sample line into the series and its value. It accepts
// an optional timestamp after the value.
func cutValue(line string) (series string, value float64, ok bool) {
	end := strings.LastIndexByte(line, '}')
	rest := line
	if end >= 0 {
		series, rest = line[:end+1], line[end+1:]
	} else {
		var found bool
		series, rest, found = strings.Cut(line, " ")
		if !found {
			return "", 0, false
		}
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return "", 0, false
	}
	return series, v, true
}

// isErrorCode reports whether the code label in labels is 400 or more,
// other than 499.
func isErrorCode(labels string) bool {
	_, rest, ok := strings.Cut(labels, `code="`)
	if !ok {
		return false
	}
	code, _, _ := strings.Cut(rest, `"`)
	return code != "" && (code[0] == '4' || code[0] == '5') && code != "499"
}
