package deploy_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// workloadKustomizations are the kustomizations that run the sidecar.
var workloadKustomizations = []string{"base", "overlays/legacy-sidecar", "overlays/gateway"}

// goRuntimeVariables are read by the Go runtime, not by the sidecar's
// configuration, so -help does not list them.
var goRuntimeVariables = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true, "GOGC": true, "GODEBUG": true}

// rendered is one kustomization's output, with the authproxy container and
// the settings it receives.
type rendered struct {
	objects    []map[string]any
	deployment map[string]any
	podSpec    map[string]any
	// container is the authproxy container, native (initContainers) or not.
	container map[string]any
	native    bool
	// settings are the variables from env (literal values only) and from
	// the ConfigMaps named in envFrom.
	settings map[string]string
	// valueFrom are the variables set from a field or resource reference.
	valueFrom []string
}

func render(t *testing.T, dir string) rendered {
	t.Helper()

	result := rendered{objects: renderKustomization(t, dir), settings: map[string]string{}}

	configMaps := map[string]map[string]any{}
	for _, object := range result.objects {
		switch fieldString(object, "kind") {
		case "ConfigMap":
			configMaps[fieldString(object, "metadata", "name")] = fieldMap(object, "data")
		case "Deployment":
			if result.deployment != nil {
				t.Fatalf("%s renders more than one Deployment", dir)
			}

			result.deployment = object
		}
	}

	if result.deployment == nil {
		t.Fatalf("%s renders no Deployment", dir)
	}

	result.podSpec = fieldMap(result.deployment, "spec", "template", "spec")

	for _, list := range []string{"initContainers", "containers"} {
		for _, container := range fieldList(result.podSpec, list) {
			if fieldString(container, "name") == "authproxy" {
				result.container = container.(map[string]any)
				result.native = list == "initContainers"
			}
		}
	}

	if result.container == nil {
		t.Fatalf("%s: no container named authproxy", dir)
	}

	for _, source := range fieldList(result.container, "envFrom") {
		name := fieldString(source, "configMapRef", "name")

		data, ok := configMaps[name]
		if !ok {
			t.Fatalf("%s: envFrom names ConfigMap %q, which the kustomization does not render", dir, name)
		}

		for key, value := range data {
			result.settings[key] = value.(string)
		}
	}

	for _, variable := range fieldList(result.container, "env") {
		name := fieldString(variable, "name")
		if field(variable, "valueFrom") != nil {
			result.valueFrom = append(result.valueFrom, name)
		} else {
			result.settings[name] = fieldString(variable, "value")
		}
	}

	return result
}

// containerPorts maps the authproxy container's port names to numbers.
func (r rendered) containerPorts() map[string]string {
	ports := map[string]string{}
	for _, port := range fieldList(r.container, "ports") {
		ports[fieldString(port, "name")] = fieldString(port, "containerPort")
	}

	return ports
}

func (r rendered) podLabels() map[string]any {
	return fieldMap(r.deployment, "spec", "template", "metadata", "labels")
}

func TestManifestVariablesAreSidecarSettings(t *testing.T) {
	known := sidecarVariables(t)

	for _, dir := range workloadKustomizations {
		t.Run(dir, func(t *testing.T) {
			manifest := render(t, dir)

			for name := range manifest.settings {
				if !known[name] && !goRuntimeVariables[name] {
					t.Errorf("%s sets %s, which authproxy -help does not list", dir, name)
				}
			}

			for _, name := range manifest.valueFrom {
				if !known[name] && !goRuntimeVariables[name] {
					t.Errorf("%s sets %s from a reference, but authproxy -help does not list it", dir, name)
				}
			}

			if manifest.settings["CLIENT_SECRET"] != "" {
				t.Errorf("%s sets CLIENT_SECRET as a plain value; mount the Secret and set CLIENT_SECRET_FILE", dir)
			}
		})
	}
}

// TestManifestSettingsRunSidecar starts the sidecar with each manifest's
// settings, against a local Taskmaster, and requests every probe path.
func TestManifestSettingsRunSidecar(t *testing.T) {
	upstream := startTaskmaster(t)
	secretFile := writeSecretFile(t)

	for _, dir := range workloadKustomizations {
		t.Run(dir, func(t *testing.T) {
			manifest := render(t, dir)

			env := map[string]string{}
			for name, value := range manifest.settings {
				env[name] = value
			}

			// Only loopback traffic: the upstream and the secret path are
			// the test's own. LISTEN_ADDR and ADMIN_ADDR move to free
			// loopback ports.
			env["UPSTREAM_URL"] = upstream.URL
			delete(env, "TOKEN_URL")
			delete(env, "ISSUER_URL")
			env["CLIENT_SECRET_FILE"] = secretFile

			s := startSidecar(t, env)
			s.waitReady(t)

			probes := map[string]string{
				"startupProbe":   "/readyz",
				"readinessProbe": "/readyz",
				"livenessProbe":  "/healthz",
			}
			for probe, want := range probes {
				got := fieldString(manifest.container, probe, "httpGet", "path")
				if got != want {
					t.Errorf("%s path is %q, expected %q", probe, got, want)
				}

				if status, body := s.get(t, s.adminURL+got); status != http.StatusOK {
					t.Errorf("%s: GET %s on the admin port returned %d (%s), expected 200", probe, got, status, body)
				}
			}

			status, body := s.get(t, s.proxyURL+"/api/tasks")
			if status != http.StatusOK {
				t.Errorf("GET /api/tasks through the sidecar returned %d (%s), expected 200", status, body)
			}
		})
	}
}

func TestProbesUseAdminPort(t *testing.T) {
	for _, dir := range workloadKustomizations {
		t.Run(dir, func(t *testing.T) {
			manifest := render(t, dir)
			ports := manifest.containerPorts()

			adminAddr := manifest.settings["ADMIN_ADDR"]
			if adminAddr == "" {
				t.Fatalf("%s does not set ADMIN_ADDR; set it so the probes' port is explicit", dir)
			}

			adminPort := portOf(t, adminAddr)

			for _, probe := range []string{"startupProbe", "readinessProbe", "livenessProbe"} {
				name := fieldString(manifest.container, probe, "httpGet", "port")

				number, ok := ports[name]
				if !ok {
					t.Errorf("%s port %q is not a port of the authproxy container (%v)", probe, name, ports)
					continue
				}

				if number != adminPort {
					t.Errorf("%s port %q is %s, but ADMIN_ADDR is %s", probe, name, number, adminAddr)
				}
			}

			if strings.HasPrefix(adminAddr, "127.") || strings.HasPrefix(adminAddr, "localhost:") {
				t.Errorf("ADMIN_ADDR %s is loopback only, so the kubelet's probes and Prometheus cannot reach it", adminAddr)
			}
		})
	}
}

func TestSidecarPlacement(t *testing.T) {
	base := render(t, "base")
	if !base.native {
		t.Error("base: authproxy is not in initContainers, so it is no native sidecar")
	}

	if got := fieldString(base.container, "restartPolicy"); got != "Always" {
		t.Errorf("base: authproxy restartPolicy is %q, expected Always (native sidecar)", got)
	}

	if len(fieldList(base.podSpec, "containers")) == 0 {
		t.Error("base: no app container")
	}

	legacy := render(t, "overlays/legacy-sidecar")
	if legacy.native {
		t.Error("legacy-sidecar: authproxy is still in initContainers")
	}

	if field(legacy.container, "restartPolicy") != nil {
		t.Error("legacy-sidecar: authproxy keeps restartPolicy, which Kubernetes before 1.29 rejects")
	}

	if got := len(fieldList(legacy.podSpec, "containers")); got != 2 {
		t.Errorf("legacy-sidecar: %d containers, expected the app and authproxy", got)
	}

	gateway := render(t, "overlays/gateway")
	if got := gateway.settings["ALLOW_NON_LOOPBACK_LISTEN"]; got != "true" {
		t.Errorf("gateway: ALLOW_NON_LOOPBACK_LISTEN is %q, expected true", got)
	}

	if got := gateway.settings["LISTEN_ADDR"]; got != "0.0.0.0:8080" {
		t.Errorf("gateway: LISTEN_ADDR is %q, expected 0.0.0.0:8080", got)
	}

	for _, manifest := range []rendered{base, legacy} {
		if addr := manifest.settings["LISTEN_ADDR"]; addr != "" && !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Errorf("sidecar LISTEN_ADDR is %q, expected a 127.0.0.1 address", addr)
		}
	}
}

func TestSecurityAndResources(t *testing.T) {
	for _, dir := range workloadKustomizations {
		t.Run(dir, func(t *testing.T) {
			manifest := render(t, dir)
			security := fieldMap(manifest.container, "securityContext")

			expected := map[string]string{
				"runAsNonRoot":             "true",
				"runAsUser":                "65532",
				"runAsGroup":               "65532",
				"readOnlyRootFilesystem":   "true",
				"allowPrivilegeEscalation": "false",
			}
			for key, want := range expected {
				if got := fieldString(security, key); got != want {
					t.Errorf("securityContext.%s is %q, expected %q", key, got, want)
				}
			}

			if drop := fieldList(security, "capabilities", "drop"); len(drop) != 1 || drop[0] != "ALL" {
				t.Errorf("securityContext.capabilities.drop is %v, expected [ALL]", drop)
			}

			if got := fieldString(security, "seccompProfile", "type"); got != "RuntimeDefault" {
				t.Errorf("securityContext.seccompProfile.type is %q, expected RuntimeDefault", got)
			}

			for _, kind := range []string{"requests", "limits"} {
				for _, resource := range []string{"cpu", "memory"} {
					if fieldString(manifest.container, "resources", kind, resource) == "" {
						t.Errorf("resources.%s.%s is not set", kind, resource)
					}
				}
			}
		})
	}

	base := render(t, "base")
	expected := map[string]string{
		"requests/cpu": "10m", "requests/memory": "32Mi",
		"limits/cpu": "500m", "limits/memory": "96Mi",
	}
	for key, want := range expected {
		kind, resource, _ := strings.Cut(key, "/")
		if got := fieldString(base.container, "resources", kind, resource); got != want {
			t.Errorf("base: resources.%s.%s is %q, expected %q", kind, resource, got, want)
		}
	}
}

func TestSecretMountedAsFile(t *testing.T) {
	for _, dir := range workloadKustomizations {
		t.Run(dir, func(t *testing.T) {
			manifest := render(t, dir)

			secretFile := manifest.settings["CLIENT_SECRET_FILE"]
			if secretFile == "" {
				t.Fatal("CLIENT_SECRET_FILE is not set")
			}

			volumes := map[string]map[string]any{}
			for _, volume := range fieldList(manifest.podSpec, "volumes") {
				volumes[fieldString(volume, "name")] = volume.(map[string]any)
			}

			var mount map[string]any

			for _, candidate := range fieldList(manifest.container, "volumeMounts") {
				if fieldString(candidate, "mountPath") == path.Dir(secretFile) {
					mount = candidate.(map[string]any)
				}
			}

			if mount == nil {
				t.Fatalf("no volume is mounted at %s, the directory of CLIENT_SECRET_FILE", path.Dir(secretFile))
			}

			// The kubelet never updates a subPath mount, so a rotated secret
			// would not reach the sidecar.
			if field(mount, "subPath") != nil {
				t.Error("the secret volume is mounted with subPath, which stops Secret updates")
			}

			if fieldString(mount, "readOnly") != "true" {
				t.Error("the secret volume is not mounted readOnly")
			}

			volume := volumes[fieldString(mount, "name")]
			if fieldString(volume, "secret", "secretName") == "" {
				t.Fatalf("volume %q is not a Secret volume", fieldString(mount, "name"))
			}

			items := fieldList(volume, "secret", "items")
			found := false

			for _, item := range items {
				if fieldString(item, "path") == path.Base(secretFile) {
					found = true
				}
			}

			if len(items) > 0 && !found {
				t.Errorf("the Secret volume's items have no path %q", path.Base(secretFile))
			}

			// The sidecar runs as 65532 and the file is owned by root, so
			// the group (fsGroup) must be able to read it.
			mode, err := strconv.Atoi(fieldString(volume, "secret", "defaultMode"))
			if err != nil || mode&0o040 == 0 {
				t.Errorf("secret defaultMode %q does not let the group read the file", fieldString(volume, "secret", "defaultMode"))
			}

			if got := fieldString(manifest.podSpec, "securityContext", "fsGroup"); got != "65532" {
				t.Errorf("pod securityContext.fsGroup is %q, expected 65532 so the sidecar can read the secret", got)
			}
		})
	}
}

func TestGracePeriodCoversShutdown(t *testing.T) {
	for _, dir := range workloadKustomizations {
		t.Run(dir, func(t *testing.T) {
			manifest := render(t, dir)

			delay := settingDuration(t, manifest, "SHUTDOWN_DELAY", "0s")
			grace := settingDuration(t, manifest, "SHUTDOWN_GRACE", "20s")

			seconds, err := strconv.Atoi(fieldString(manifest.podSpec, "terminationGracePeriodSeconds"))
			if err != nil {
				t.Fatalf("terminationGracePeriodSeconds is not set: %v", err)
			}

			if period := time.Duration(seconds) * time.Second; period <= delay+grace {
				t.Errorf("terminationGracePeriodSeconds (%v) is not longer than SHUTDOWN_DELAY (%v) plus SHUTDOWN_GRACE (%v)", period, delay, grace)
			}
		})
	}
}

func settingDuration(t *testing.T, manifest rendered, name, fallback string) time.Duration {
	t.Helper()

	value := manifest.settings[name]
	if value == "" {
		value = fallback
	}

	duration, err := time.ParseDuration(value)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, value, err)
	}

	return duration
}

func selectorMatches(t *testing.T, what string, selector, labels map[string]any) {
	t.Helper()

	if len(selector) == 0 {
		t.Errorf("%s: empty selector", what)
	}

	for key, value := range selector {
		if labels[key] != value {
			t.Errorf("%s selects %s=%v, but the pod labels are %v", what, key, value, labels)
		}
	}
}

func TestSelectorsMatchPods(t *testing.T) {
	for _, dir := range workloadKustomizations {
		manifest := render(t, dir)
		selectorMatches(t, dir+" Deployment", fieldMap(manifest.deployment, "spec", "selector", "matchLabels"), manifest.podLabels())
	}

	gateway := render(t, "overlays/gateway")
	labels := gateway.podLabels()
	ports := gateway.containerPorts()
	listenPort := portOf(t, gateway.settings["LISTEN_ADDR"])
	deploymentName := fieldString(gateway.deployment, "metadata", "name")

	kinds := map[string]bool{}

	for _, object := range gateway.objects {
		kind := fieldString(object, "kind")
		kinds[kind] = true

		switch kind {
		case "Service":
			selectorMatches(t, "Service", fieldMap(object, "spec", "selector"), labels)

			for _, port := range fieldList(object, "spec", "ports") {
				target := fieldString(port, "targetPort")
				if ports[target] != listenPort {
					t.Errorf("Service targetPort %q is container port %q, but LISTEN_ADDR port is %s", target, ports[target], listenPort)
				}
			}
		case "PodDisruptionBudget":
			selectorMatches(t, "PodDisruptionBudget", fieldMap(object, "spec", "selector", "matchLabels"), labels)
		case "NetworkPolicy":
			selectorMatches(t, "NetworkPolicy", fieldMap(object, "spec", "podSelector", "matchLabels"), labels)

			for _, rule := range fieldList(object, "spec", "ingress") {
				for _, port := range fieldList(rule, "ports") {
					if _, ok := ports[fieldString(port, "port")]; !ok {
						t.Errorf("NetworkPolicy admits port %q, which the container does not name (%v)", fieldString(port, "port"), ports)
					}
				}
			}
		case "HorizontalPodAutoscaler":
			if got := fieldString(object, "spec", "scaleTargetRef", "name"); got != deploymentName {
				t.Errorf("HorizontalPodAutoscaler targets %q, expected %q", got, deploymentName)
			}
		}
	}

	for _, kind := range []string{"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"} {
		if !kinds[kind] {
			t.Errorf("the gateway overlay renders no %s", kind)
		}
	}
}

func TestPodMonitorFindsSidecars(t *testing.T) {
	var podMonitor map[string]any

	for _, object := range renderKustomization(t, "monitoring") {
		if fieldString(object, "kind") == "PodMonitor" {
			podMonitor = object
		}
	}

	if podMonitor == nil {
		t.Fatal("deploy/monitoring renders no PodMonitor")
	}

	endpoints := fieldList(podMonitor, "spec", "podMetricsEndpoints")
	if len(endpoints) != 1 {
		t.Fatalf("PodMonitor has %d endpoints, expected 1", len(endpoints))
	}

	portName := fieldString(endpoints[0], "port")
	if got := fieldString(endpoints[0], "path"); got != "/metrics" {
		t.Errorf("PodMonitor path is %q, expected /metrics", got)
	}

	for _, dir := range workloadKustomizations {
		manifest := render(t, dir)
		selectorMatches(t, "PodMonitor for "+dir, fieldMap(podMonitor, "spec", "selector", "matchLabels"), manifest.podLabels())

		number, ok := manifest.containerPorts()[portName]
		if !ok {
			t.Errorf("%s: the authproxy container has no port named %q for the PodMonitor", dir, portName)
			continue
		}

		if number != portOf(t, manifest.settings["ADMIN_ADDR"]) {
			t.Errorf("%s: port %q is %s, but ADMIN_ADDR is %s", dir, portName, number, manifest.settings["ADMIN_ADDR"])
		}
	}
}

// alertRules returns the alerting rules of deploy/monitoring/prometheusrule.yaml.
func alertRules(t *testing.T) []map[string]any {
	t.Helper()

	data, err := os.ReadFile("monitoring/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}

	docs, err := parseYAMLStream(string(data))
	if err != nil {
		t.Fatalf("decode prometheusrule.yaml: %v", err)
	}

	var rules []map[string]any

	for _, group := range fieldList(docs[0], "spec", "groups") {
		for _, rule := range fieldList(group, "rules") {
			if fieldString(rule, "alert") != "" {
				rules = append(rules, rule.(map[string]any))
			}
		}
	}

	if len(rules) == 0 {
		t.Fatal("prometheusrule.yaml has no alerting rules")
	}

	return rules
}

// githubAnchor returns the anchor GitHub gives a Markdown heading.
func githubAnchor(heading string) string {
	var b strings.Builder

	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}

	return b.String()
}

func TestAlertsHaveRunbooksAndTests(t *testing.T) {
	runbooks, err := os.ReadFile("../docs/runbooks.md")
	if err != nil {
		t.Fatal(err)
	}

	anchors := map[string]bool{}
	for _, line := range strings.Split(string(runbooks), "\n") {
		if heading, ok := strings.CutPrefix(line, "## "); ok {
			anchors[githubAnchor(heading)] = true
		}
	}

	unitTests, err := os.ReadFile("monitoring/alerts_test.yaml")
	if err != nil {
		t.Fatal(err)
	}

	const runbookPrefix = "https://github.com/authproxy/authproxy/blob/main/docs/runbooks.md#"

	for _, rule := range alertRules(t) {
		name := fieldString(rule, "alert")

		for _, annotation := range []string{"summary", "description", "runbook_url"} {
			if fieldString(rule, "annotations", annotation) == "" {
				t.Errorf("%s has no %s annotation", name, annotation)
			}
		}

		if severity := fieldString(rule, "labels", "severity"); severity != "warning" && severity != "critical" {
			t.Errorf("%s severity is %q, expected warning or critical", name, severity)
		}

		url := fieldString(rule, "annotations", "runbook_url")

		anchor, ok := strings.CutPrefix(url, runbookPrefix)
		if !ok {
			t.Errorf("%s runbook_url %q does not start with %s", name, url, runbookPrefix)
		} else if !anchors[anchor] {
			t.Errorf("%s runbook_url anchor #%s matches no heading in docs/runbooks.md", name, anchor)
		}

		if !strings.Contains(string(unitTests), "alertname: "+name+"\n") {
			t.Errorf("%s has no promtool unit test in monitoring/alerts_test.yaml", name)
		}
	}
}

var metricNamePattern = regexp.MustCompile(`\bauthproxy_[a-z_]+\b`)

// TestMonitoringUsesExposedMetrics checks that every authproxy_ metric the
// alerts and the dashboard query is one the sidecar exposes.
func TestMonitoringUsesExposedMetrics(t *testing.T) {
	upstream := startTaskmaster(t)

	s := startSidecar(t, map[string]string{
		"CLIENT_ID":          testClientID,
		"CLIENT_SECRET_FILE": writeSecretFile(t),
		"UPSTREAM_URL":       upstream.URL,
		"LOG_LEVEL":          "warn",
	})
	s.waitReady(t)

	// One proxied request creates the request series.
	if status, body := s.get(t, s.proxyURL+"/api/tasks"); status != http.StatusOK {
		t.Fatalf("GET /api/tasks returned %d (%s), expected 200", status, body)
	}

	status, exposition := s.get(t, s.adminURL+"/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics returned %d", status)
	}

	exposed := map[string]bool{}

	var families []string

	for _, line := range strings.Split(exposition, "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, kind, _ := strings.Cut(rest, " ")
			exposed[name] = true
			families = append(families, name)

			if kind == "histogram" {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					exposed[name+suffix] = true
				}
			}
		}
	}

	sources := map[string]string{}

	rules, err := os.ReadFile("monitoring/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}

	sources["prometheusrule.yaml"] = string(rules)

	dashboard := dashboardQueries(t)
	sources["dashboard.json"] = strings.Join(dashboard, "\n")

	for file, text := range sources {
		names := metricNamePattern.FindAllString(text, -1)
		if len(names) == 0 {
			t.Errorf("%s names no authproxy_ metric", file)
		}

		for _, name := range names {
			if !exposed[name] {
				t.Errorf("%s uses %s, which the sidecar's /metrics does not expose", file, name)
			}
		}
	}

	// Every authproxy metric family appears on the dashboard; a histogram
	// counts through its _bucket series.
	for _, name := range families {
		if strings.HasPrefix(name, "authproxy_") && !strings.Contains(sources["dashboard.json"], name) {
			t.Errorf("dashboard.json does not show %s", name)
		}
	}
}

// dashboardQueries returns the PromQL expressions of the dashboard's panels.
func dashboardQueries(t *testing.T) []string {
	t.Helper()

	data, err := os.ReadFile("monitoring/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}

	var dashboard struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}

	if err := json.Unmarshal(data, &dashboard); err != nil {
		t.Fatalf("decode dashboard.json: %v", err)
	}

	var queries []string

	for _, panel := range dashboard.Panels {
		for _, target := range panel.Targets {
			queries = append(queries, target.Expr)
		}
	}

	if len(queries) == 0 {
		t.Fatal("dashboard.json has no queries")
	}

	return queries
}
