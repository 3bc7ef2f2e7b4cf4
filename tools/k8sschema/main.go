// Command k8sschema writes standalone, strict JSON schemas for the built-in
// Kubernetes kinds, in the file layout that kubeconform's -schema-location
// template '{{ .ResourceKind }}{{ .KindSuffix }}.json' expects.
//
// The input is a directory of Kubernetes OpenAPI v3 documents laid out as
// api/v1.json and apis/<group>/<version>.json, such as
// pkg/openapiclient/builtins/<minor version> in the Go module
// sigs.k8s.io/kubectl-validate, so validation needs no network access. Each
// schema has every $ref inlined and additionalProperties set to false on
// objects that list their properties, so an unknown or misspelt field fails
// validation.
//
// The program reads the documents as plain files instead of importing
// kubectl-validate, because that package pulls in client-go and the API
// server libraries, which take minutes to compile.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

const refPrefix = "#/components/schemas/"

func main() {
	openAPIDir := flag.String("openapi-dir", "", "directory of OpenAPI v3 documents (api/v1.json, apis/<group>/<version>.json) (required)")
	outDir := flag.String("out", "", "output directory for the schema files (required)")
	flag.Parse()

	if *openAPIDir == "" || *outDir == "" {
		log.Fatal("missing -openapi-dir or -out: both are required")
	}

	count, err := writeSchemas(*openAPIDir, *outDir)
	if err != nil {
		log.Fatal(err)
	}

	fmt.Printf("wrote %d schemas from %s to %s\n", count, *openAPIDir, *outDir)
}

// writeSchemas writes one file per group, version and kind and returns the
// number of files written.
func writeSchemas(openAPIDir, outDir string) (int, error) {
	core, err := filepath.Glob(filepath.Join(openAPIDir, "api", "*.json"))
	if err != nil {
		return 0, err
	}

	groups, err := filepath.Glob(filepath.Join(openAPIDir, "apis", "*", "*.json"))
	if err != nil {
		return 0, err
	}

	documents := append(core, groups...)
	if len(documents) == 0 {
		return 0, fmt.Errorf("no OpenAPI documents found under %s: expected api/v1.json and apis/<group>/<version>.json", openAPIDir)
	}

	sort.Strings(documents)

	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return 0, err
	}

	// Some kinds, such as DeleteOptions and WatchEvent, appear in every
	// document, so each file is written only once.
	written := map[string]bool{}

	for _, document := range documents {
		raw, err := os.ReadFile(document)
		if err != nil {
			return len(written), err
		}

		if err := writeDocument(raw, outDir, written); err != nil {
			return len(written), fmt.Errorf("convert OpenAPI document %s: %w", document, err)
		}
	}

	return len(written), nil
}

type openAPIDocument struct {
	Components struct {
		Schemas map[string]any `json:"schemas"`
	} `json:"components"`
}

type groupVersionKind struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
}

// writeDocument converts every top-level kind of one OpenAPI document and
// records the file names it wrote in written.
func writeDocument(raw []byte, outDir string, written map[string]bool) error {
	var doc openAPIDocument
	if err := json.Unmarshal(raw, &doc); err != nil {
		return err
	}

	for name, schema := range doc.Components.Schemas {
		kinds := kindsOf(schema)
		if len(kinds) == 0 {
			continue
		}

		converter := &converter{components: doc.Components.Schemas}

		standalone := converter.convert(schema, map[string]bool{name: true})

		for _, gvk := range kinds {
			// Types without apiVersion and kind fields are never sent as a
			// top-level object.
			if !hasProperty(schema, "apiVersion") || !hasProperty(schema, "kind") {
				continue
			}

			file := fileName(gvk)
			if written[file] {
				continue
			}

			standalone := withFixedKind(standalone, gvk)

			data, err := json.MarshalIndent(standalone, "", "  ")
			if err != nil {
				return err
			}

			if err := os.WriteFile(filepath.Join(outDir, file), append(data, '\n'), 0o644); err != nil {
				return err
			}

			written[file] = true
		}
	}

	return nil
}

// fileName mirrors kubeconform's naming: the lower-case kind, then the first
// label of the API group (if any) and the version.
func fileName(gvk groupVersionKind) string {
	suffix := ""
	if gvk.Group != "" {
		suffix = "-" + strings.ToLower(strings.Split(gvk.Group, ".")[0])
	}

	return strings.ToLower(gvk.Kind) + suffix + "-" + strings.ToLower(gvk.Version) + ".json"
}

func kindsOf(schema any) []groupVersionKind {
	object, ok := schema.(map[string]any)
	if !ok {
		return nil
	}

	raw, ok := object["x-kubernetes-group-version-kind"]
	if !ok {
		return nil
	}

	data, err := json.Marshal(raw)
	if err != nil {
		return nil
	}

	var kinds []groupVersionKind
	if err := json.Unmarshal(data, &kinds); err != nil {
		return nil
	}

	return kinds
}

func hasProperty(schema any, name string) bool {
	object, _ := schema.(map[string]any)
	properties, _ := object["properties"].(map[string]any)
	_, ok := properties[name]

	return ok
}

// withFixedKind returns a shallow copy of schema whose apiVersion and kind
// accept only the values of gvk, because one file serves one kind.
func withFixedKind(schema any, gvk groupVersionKind) any {
	object, ok := schema.(map[string]any)
	if !ok {
		return schema
	}

	apiVersion := gvk.Version
	if gvk.Group != "" {
		apiVersion = gvk.Group + "/" + gvk.Version
	}

	properties := map[string]any{}
	for key, value := range object["properties"].(map[string]any) {
		properties[key] = value
	}

	properties["apiVersion"] = map[string]any{"type": "string", "enum": []string{apiVersion}}
	properties["kind"] = map[string]any{"type": "string", "enum": []string{gvk.Kind}}

	result := map[string]any{}
	for key, value := range object {
		result[key] = value
	}

	result["properties"] = properties
	result["required"] = mergeRequired(object["required"], "apiVersion", "kind")
	result["$schema"] = "http://json-schema.org/draft-07/schema#"

	return result
}

func mergeRequired(existing any, names ...string) []string {
	seen := map[string]bool{}

	var result []string

	list, _ := existing.([]any)
	for _, item := range list {
		if name, ok := item.(string); ok && !seen[name] {
			seen[name] = true
			result = append(result, name)
		}
	}

	for _, name := range names {
		if !seen[name] {
			seen[name] = true
			result = append(result, name)
		}
	}

	return result
}
