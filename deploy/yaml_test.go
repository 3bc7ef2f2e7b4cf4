package deploy_test

import (
	"fmt"
	"strconv"
	"strings"
)

// parseYAMLStream decodes the YAML that kustomize writes into one value per
// document: map[string]any, []any, or string for every scalar (numbers and
// booleans stay strings, so compare them as text).
//
// It reads the block style that kustomize emits and no more: block mappings
// and sequences, plain and quoted scalars that may wrap onto more-indented
// lines, literal (|) and folded (>) block scalars, and the empty flow
// collections {} and []. Anchors, tags, non-empty flow collections and
// multi-line keys are rejected with an error, so a manifest that needs them
// makes the tests fail instead of being misread. The root module has no YAML
// library, and this keeps it that way.
func parseYAMLStream(text string) ([]any, error) {
	var docs []any

	for i, chunk := range splitDocuments(text) {
		if strings.TrimSpace(stripComments(chunk)) == "" {
			continue
		}

		p := &yamlParser{lines: strings.Split(chunk, "\n")}

		doc, err := p.parseNode(0)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}

		if p.skipBlank(); p.pos < len(p.lines) {
			return nil, fmt.Errorf("document %d, line %d: unexpected %q", i+1, p.pos+1, p.lines[p.pos])
		}

		docs = append(docs, doc)
	}

	return docs, nil
}

func splitDocuments(text string) []string {
	var (
		docs    []string
		current []string
	)

	for _, line := range strings.Split(text, "\n") {
		if line == "---" {
			docs = append(docs, strings.Join(current, "\n"))
			current = nil

			continue
		}

		current = append(current, line)
	}

	return append(docs, strings.Join(current, "\n"))
}

func stripComments(text string) string {
	var kept []string

	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			kept = append(kept, line)
		}
	}

	return strings.Join(kept, "\n")
}

type yamlParser struct {
	lines []string
	pos   int
}

func indentOf(line string) int {
	return len(line) - len(strings.TrimLeft(line, " "))
}

func isBlankOrComment(line string) bool {
	trimmed := strings.TrimSpace(line)

	return trimmed == "" || strings.HasPrefix(trimmed, "#")
}

// skipBlank moves past empty and comment-only lines.
func (p *yamlParser) skipBlank() {
	for p.pos < len(p.lines) && isBlankOrComment(p.lines[p.pos]) {
		p.pos++
	}
}

// parseNode parses the block node that starts at the next line, whose
// indentation must be at least minIndent. It returns nil (YAML null) when
// no such line follows.
func (p *yamlParser) parseNode(minIndent int) (any, error) {
	p.skipBlank()

	if p.pos >= len(p.lines) {
		return nil, nil
	}

	line := p.lines[p.pos]

	indent := indentOf(line)
	if indent < minIndent {
		return nil, nil
	}

	if isSequenceItem(line[indent:]) {
		return p.parseSequence(indent)
	}

	return p.parseMapping(indent)
}

func isSequenceItem(text string) bool {
	return text == "-" || strings.HasPrefix(text, "- ")
}

func (p *yamlParser) parseSequence(indent int) ([]any, error) {
	items := []any{}

	for {
		p.skipBlank()

		if p.pos >= len(p.lines) {
			return items, nil
		}

		line := p.lines[p.pos]
		if indentOf(line) != indent || !isSequenceItem(line[indent:]) {
			return items, nil
		}

		rest := strings.TrimPrefix(line[indent:], "-")
		content := strings.TrimLeft(rest, " ")
		contentIndent := indent + 1 + len(rest) - len(content)

		var (
			item any
			err  error
		)

		switch {
		case content == "":
			p.pos++
			item, err = p.parseNode(indent + 1)
		case content[0] == '|' || content[0] == '>':
			p.pos++
			item, err = p.parseBlockScalar(content, indent)
		case startsMappingEntry(content):
			// "- key: value" opens a mapping whose keys line up with "key".
			p.lines[p.pos] = strings.Repeat(" ", contentIndent) + content
			item, err = p.parseMapping(contentIndent)
		default:
			p.pos++
			item, err = p.parseScalar(content, indent)
		}

		if err != nil {
			return nil, err
		}

		items = append(items, item)
	}
}

func (p *yamlParser) parseMapping(indent int) (map[string]any, error) {
	mapping := map[string]any{}

	for {
		p.skipBlank()

		if p.pos >= len(p.lines) {
			return mapping, nil
		}

		line := p.lines[p.pos]
		if indentOf(line) != indent || isSequenceItem(line[indent:]) {
			if indentOf(line) > indent {
				return nil, fmt.Errorf("line %d: unexpected indentation: %q", p.pos+1, line)
			}

			return mapping, nil
		}

		key, rest, err := splitMappingEntry(line[indent:])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", p.pos+1, err)
		}

		if _, duplicate := mapping[key]; duplicate {
			return nil, fmt.Errorf("line %d: duplicate key %q", p.pos+1, key)
		}

		p.pos++

		var value any

		switch {
		case rest == "":
			value, err = p.parseNestedValue(indent)
		case rest[0] == '|' || rest[0] == '>':
			value, err = p.parseBlockScalar(rest, indent)
		default:
			value, err = p.parseScalar(rest, indent)
		}

		if err != nil {
			return nil, err
		}

		mapping[key] = value
	}
}

// parseNestedValue parses the value of a key with nothing after its colon:
// a more-indented node, or a sequence at the key's own indentation, as
// kustomize writes it.
func (p *yamlParser) parseNestedValue(keyIndent int) (any, error) {
	p.skipBlank()

	if p.pos >= len(p.lines) {
		return nil, nil
	}

	line := p.lines[p.pos]

	indent := indentOf(line)
	if indent == keyIndent && isSequenceItem(line[indent:]) {
		return p.parseSequence(indent)
	}

	if indent > keyIndent {
		return p.parseNode(indent)
	}

	return nil, nil
}

// startsMappingEntry reports whether text begins with "key:" followed by a
// space or the end of the line, outside quotes.
func startsMappingEntry(text string) bool {
	_, _, err := splitMappingEntry(text)

	return err == nil
}

func splitMappingEntry(text string) (key, rest string, err error) {
	if text[0] == '"' || text[0] == '\'' {
		end := closingQuote(text)
		if end < 0 {
			return "", "", fmt.Errorf("unterminated quoted key: %q", text)
		}

		after := text[end+1:]
		if after != ":" && !strings.HasPrefix(after, ": ") {
			return "", "", fmt.Errorf("expected ':' after quoted key: %q", text)
		}

		key, err = decodeQuoted(text[:end+1])

		return key, strings.TrimSpace(strings.TrimPrefix(after, ":")), err
	}

	for i := 0; i < len(text); i++ {
		if text[i] != ':' {
			continue
		}

		if i+1 == len(text) || text[i+1] == ' ' {
			return text[:i], strings.TrimSpace(text[i+1:]), nil
		}
	}

	return "", "", fmt.Errorf("expected 'key: value': %q", text)
}

// closingQuote returns the index of the quote that closes the quoted scalar
// at the start of text, or -1.
func closingQuote(text string) int {
	quote := text[0]

	for i := 1; i < len(text); i++ {
		switch {
		case quote == '"' && text[i] == '\\':
			i++
		case quote == '\'' && text[i] == '\'' && i+1 < len(text) && text[i+1] == '\'':
			i++
		case text[i] == quote:
			return i
		}
	}

	return -1
}

// parseScalar decodes a flow scalar that starts with first and may continue
// on the following lines indented more than parentIndent.
func (p *yamlParser) parseScalar(first string, parentIndent int) (any, error) {
	switch first {
	case "{}":
		return map[string]any{}, nil
	case "[]":
		return []any{}, nil
	}

	switch first[0] {
	case '{', '[', '&', '*', '!':
		return nil, fmt.Errorf("line %d: unsupported YAML construct: %q", p.pos, first)
	}

	parts := []string{first}

	for p.pos < len(p.lines) {
		line := p.lines[p.pos]
		if strings.TrimSpace(line) != "" && indentOf(line) <= parentIndent {
			break
		}

		if first[0] != '"' && first[0] != '\'' && isBlankOrComment(line) && strings.TrimSpace(line) != "" {
			break
		}

		parts = append(parts, strings.TrimSpace(line))
		p.pos++
	}

	// Trailing empty lines belong to whatever follows.
	for len(parts) > 1 && parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
		p.pos--
	}

	folded := foldLines(parts)

	if first[0] == '"' || first[0] == '\'' {
		return decodeQuoted(folded)
	}

	if i := strings.Index(folded, " #"); i >= 0 {
		folded = strings.TrimSpace(folded[:i])
	}

	return folded, nil
}

// foldLines joins the lines of a wrapped scalar: a line break becomes a
// space, and each empty line becomes a newline.
func foldLines(parts []string) string {
	var b strings.Builder

	for i, part := range parts {
		switch {
		case i == 0:
			b.WriteString(part)
		case part == "":
			b.WriteString("\n")
		case strings.HasSuffix(b.String(), "\n"):
			b.WriteString(part)
		default:
			b.WriteString(" " + part)
		}
	}

	return b.String()
}

func decodeQuoted(text string) (string, error) {
	if len(text) < 2 || text[len(text)-1] != text[0] {
		return "", fmt.Errorf("unterminated quoted scalar: %q", text)
	}

	if text[0] == '\'' {
		return strings.ReplaceAll(text[1:len(text)-1], "''", "'"), nil
	}

	// YAML's double-quoted escapes that kustomize writes (\n, \t, \", \\,
	// \uXXXX) mean the same in Go.
	value, err := strconv.Unquote(text)
	if err != nil {
		return "", fmt.Errorf("unsupported double-quoted scalar %q: %w", text, err)
	}

	return value, nil
}

// parseBlockScalar reads a literal (|) or folded (>) block scalar with an
// optional chomping indicator (- or +).
func (p *yamlParser) parseBlockScalar(header string, parentIndent int) (string, error) {
	style, chomping := header[0], ""
	if len(header) > 1 {
		chomping = header[1:]
	}

	if chomping != "" && chomping != "-" && chomping != "+" {
		return "", fmt.Errorf("line %d: unsupported block scalar header %q", p.pos, header)
	}

	var body []string

	blockIndent := -1

	for p.pos < len(p.lines) {
		line := p.lines[p.pos]

		if strings.TrimSpace(line) == "" {
			body = append(body, "")
			p.pos++

			continue
		}

		indent := indentOf(line)
		if indent <= parentIndent {
			break
		}

		if blockIndent < 0 {
			blockIndent = indent
		}

		if indent < blockIndent {
			return "", fmt.Errorf("line %d: block scalar line indented less than its first line", p.pos+1)
		}

		body = append(body, line[blockIndent:])
		p.pos++
	}

	// Count trailing empty lines for chomping, and give back to the caller
	// the ones that belong to what follows.
	trailing := 0
	for len(body) > 0 && body[len(body)-1] == "" {
		body = body[:len(body)-1]
		trailing++
	}

	var content string
	if style == '|' {
		content = strings.Join(body, "\n")
	} else {
		content = foldLines(body)
	}

	switch chomping {
	case "-":
		return content, nil
	case "+":
		return content + strings.Repeat("\n", trailing+1), nil
	default:
		if content == "" {
			return "", nil
		}

		return content + "\n", nil
	}
}
