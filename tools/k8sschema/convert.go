package main

import "strings"

// converter turns one OpenAPI v3 schema into a self-contained JSON schema.
type converter struct {
	components map[string]any
}

// convert returns a copy of node with every $ref replaced by the referenced
// schema. active contains the component names on the current path. A
// reference back into one of them, such as the recursive JSONSchemaProps
// type, becomes an empty schema that accepts any value.
func (c *converter) convert(node any, active map[string]bool) any {
	switch value := node.(type) {
	case map[string]any:
		return c.convertObject(value, active)
	case []any:
		result := make([]any, len(value))
		for i, item := range value {
			result[i] = c.convert(item, active)
		}

		return result
	default:
		return value
	}
}

func (c *converter) convertObject(object map[string]any, active map[string]bool) any {
	if ref, ok := object["$ref"].(string); ok {
		return c.resolve(ref, active)
	}

	result := map[string]any{}

	for key, value := range object {
		switch {
		case key == "format" || key == "default" || key == "example":
			// Formats such as int32 and int-or-string are not JSON Schema
			// formats, and defaults are not constraints.
			continue
		case strings.HasPrefix(key, "x-kubernetes-"):
			continue
		case key == "properties" || key == "patternProperties":
			// Map keys here are field names, not schema keywords.
			fields := map[string]any{}
			for name, field := range value.(map[string]any) {
				fields[name] = c.convert(field, active)
			}

			result[key] = fields
		default:
			result[key] = c.convert(value, active)
		}
	}

	if nullable, _ := result["nullable"].(bool); nullable {
		delete(result, "nullable")

		if typeName, ok := result["type"].(string); ok {
			result["type"] = []any{typeName, "null"}
		}
	}

	if _, hasProperties := result["properties"]; hasProperties {
		if _, set := result["additionalProperties"]; !set {
			result["additionalProperties"] = false
		}
	}

	// A single-element allOf is how OpenAPI v3 attaches a description to a
	// reference. Unwrapping it keeps additionalProperties effective.
	if allOf, ok := result["allOf"].([]any); ok && len(allOf) == 1 {
		if inner, ok := allOf[0].(map[string]any); ok {
			delete(result, "allOf")

			for key, value := range inner {
				if _, set := result[key]; !set {
					result[key] = value
				}
			}
		}
	}

	return result
}

func (c *converter) resolve(ref string, active map[string]bool) any {
	name := strings.TrimPrefix(ref, refPrefix)
	if active[name] {
		return map[string]any{}
	}

	target, ok := c.components[name]
	if !ok {
		// An unresolved reference accepts anything rather than rejecting
		// valid manifests.
		return map[string]any{}
	}

	active[name] = true
	defer delete(active, name)

	return c.convert(target, active)
}
