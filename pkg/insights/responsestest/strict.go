package responsestest

import (
	"fmt"
	"sort"
	"strings"
)

// Documented limits of strict Structured Outputs schemas, as the fake
// enforces them.
const (
	// MaxObjectProperties is the most object properties a schema may
	// declare, over all its objects.
	MaxObjectProperties = 5000
	// MaxNesting is the deepest nesting of objects: the root object is
	// level 1, and each object under a property, an array's items or a
	// definition adds one (arrays and anyOf themselves do not).
	MaxNesting = 10
	// MaxSchemaStringLength bounds the total length of property names,
	// definition names, enum values and const values.
	MaxSchemaStringLength = 120_000
	// MaxEnumValues bounds the enum values over all enum properties.
	MaxEnumValues = 1000
	// MaxLargeEnumLength bounds the total length of the string values of
	// one enum with more than LargeEnum values.
	MaxLargeEnumLength = 15_000
	LargeEnum          = 250
)

// permitted lists the keywords strict mode supports; any other keyword is
// refused as "not permitted".
func permitted(k string) bool {
	switch k {
	case "type", "description", "title", "properties", "required", "additionalProperties",
		"items", "enum", "const", "anyOf", "$ref", "$defs", "definitions",
		"pattern", "format",
		"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
		"minItems", "maxItems":
		return true
	}
	return false
}

func permittedFormat(f string) bool {
	switch f {
	case "date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid":
		return true
	}
	return false
}

func permittedType(t string) bool {
	switch t {
	case "string", "number", "integer", "boolean", "object", "array", "null":
		return true
	}
	return false
}

// nameOK checks a response format's name against the documented pattern
// ^[a-zA-Z0-9_-]{1,64}$.
func nameOK(name string) bool {
	if len(name) == 0 || len(name) > 64 {
		return false
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
		if !ok {
			return false
		}
	}
	return true
}

// strictChecker walks a schema the way strict mode checks it.
type strictChecker struct {
	root       map[string]any
	properties int
	strLen     int
	enumValues int
	maxDepth   int
}

// checkStrict returns the message OpenAI would give for the first
// violation of strict mode in schema, or "" when it is accepted.
func checkStrict(schema map[string]any) string {
	c := &strictChecker{root: schema}
	if t, _ := schema["type"].(string); t != "object" {
		if _, any := schema["anyOf"]; any {
			return "schema must be a JSON Schema of 'type: \"object\"', got 'anyOf'."
		}
		return fmt.Sprintf("schema must be a JSON Schema of 'type: \"object\"', got 'type: \"%v\"'.", schema["type"])
	}
	if msg := c.node(schema, nil, 0); msg != "" {
		return msg
	}
	switch {
	case c.properties > MaxObjectProperties:
		return fmt.Sprintf("%d object properties exceeds limit of %d.", c.properties, MaxObjectProperties)
	case c.maxDepth > MaxNesting:
		return fmt.Sprintf("%d levels of nesting exceeds limit of %d.", c.maxDepth, MaxNesting)
	case c.strLen > MaxSchemaStringLength:
		return fmt.Sprintf("total string length of property names, definition names, enum values and const values %d exceeds limit of %d.", c.strLen, MaxSchemaStringLength)
	case c.enumValues > MaxEnumValues:
		return fmt.Sprintf("%d enum values exceeds limit of %d.", c.enumValues, MaxEnumValues)
	}
	return ""
}

func ctxString(path []string) string {
	if len(path) == 0 {
		return "In context=(), "
	}
	q := make([]string, len(path))
	for i, p := range path {
		q[i] = "'" + p + "'"
	}
	s := strings.Join(q, ", ")
	if len(path) == 1 {
		s += ","
	}
	return "In context=(" + s + "), "
}

func with(path []string, more ...string) []string {
	return append(append([]string(nil), path...), more...)
}

// node checks one schema; depth counts the objects above it.
func (c *strictChecker) node(s map[string]any, path []string, depth int) string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !permitted(k) {
			return ctxString(path) + fmt.Sprintf("'%s' is not permitted.", k)
		}
	}
	if ref, ok := s["$ref"]; ok {
		r, _ := ref.(string)
		if !c.resolves(r) {
			return ctxString(path) + fmt.Sprintf("reference '%v' can't be resolved.", ref)
		}
		if len(s) > 1 {
			for _, k := range keys {
				if k != "$ref" && k != "description" && k != "title" {
					return ctxString(path) + fmt.Sprintf("'%s' is not permitted next to '$ref'.", k)
				}
			}
		}
		return ""
	}
	for _, defs := range []string{"$defs", "definitions"} {
		if d, ok := s[defs]; ok {
			m, ok := d.(map[string]any)
			if !ok {
				return ctxString(path) + fmt.Sprintf("'%s' must be an object.", defs)
			}
			for _, name := range sortedKeys(m) {
				c.strLen += len(name)
				sub, ok := m[name].(map[string]any)
				if !ok {
					return ctxString(with(path, defs, name)) + "schema must be an object."
				}
				if msg := c.node(sub, with(path, defs, name), depth); msg != "" {
					return msg
				}
			}
		}
	}
	if a, ok := s["anyOf"]; ok {
		list, ok := a.([]any)
		if !ok || len(list) == 0 {
			return ctxString(path) + "'anyOf' must be a non-empty array."
		}
		for i, v := range list {
			sub, ok := v.(map[string]any)
			if !ok {
				return ctxString(with(path, "anyOf", fmt.Sprint(i))) + "schema must be an object."
			}
			if msg := c.node(sub, with(path, "anyOf", fmt.Sprint(i)), depth); msg != "" {
				return msg
			}
		}
		return ""
	}
	types, msg := typesOf(s, path)
	if msg != "" {
		return msg
	}
	if f, ok := s["format"]; ok {
		if fs, _ := f.(string); !permittedFormat(fs) {
			return ctxString(path) + fmt.Sprintf("format '%v' is not permitted.", f)
		}
	}
	if e, ok := s["enum"]; ok {
		list, ok := e.([]any)
		if !ok || len(list) == 0 {
			return ctxString(path) + "'enum' must be a non-empty array."
		}
		c.enumValues += len(list)
		total := 0
		for _, v := range list {
			if str, ok := v.(string); ok {
				total += len(str)
			}
		}
		c.strLen += total
		if len(list) > LargeEnum && total > MaxLargeEnumLength {
			return ctxString(path) + fmt.Sprintf("enum with %d values has total string length %d, exceeding limit of %d.", len(list), total, MaxLargeEnumLength)
		}
	}
	if v, ok := s["const"].(string); ok {
		c.strLen += len(v)
	}
	if types["object"] {
		depth++
		if depth > c.maxDepth {
			c.maxDepth = depth
		}
		if ap, ok := s["additionalProperties"]; !ok || ap != false {
			return ctxString(path) + "'additionalProperties' is required to be supplied and to be false."
		}
		props, _ := s["properties"].(map[string]any)
		if _, ok := s["properties"]; ok && props == nil {
			return ctxString(path) + "'properties' must be an object."
		}
		req, _ := s["required"].([]any)
		inReq := map[string]bool{}
		for _, r := range req {
			name, _ := r.(string)
			inReq[name] = true
			if _, ok := props[name]; !ok {
				return ctxString(path) + fmt.Sprintf("Extra required key '%s' supplied.", name)
			}
		}
		for _, name := range sortedKeys(props) {
			if !inReq[name] {
				return ctxString(path) + fmt.Sprintf("'required' is required to be supplied and to be an array including every key in properties. Missing '%s'.", name)
			}
		}
		for _, name := range sortedKeys(props) {
			c.properties++
			c.strLen += len(name)
			sub, ok := props[name].(map[string]any)
			if !ok {
				return ctxString(with(path, "properties", name)) + "schema must be an object."
			}
			if msg := c.node(sub, with(path, "properties", name), depth); msg != "" {
				return msg
			}
		}
	} else if _, ok := s["properties"]; ok {
		return ctxString(path) + "'properties' is only permitted with type 'object'."
	}
	if types["array"] {
		items, ok := s["items"].(map[string]any)
		if !ok {
			return ctxString(path) + "'items' is required to be supplied for type 'array'."
		}
		if msg := c.node(items, with(path, "items"), depth); msg != "" {
			return msg
		}
	}
	return ""
}

// typesOf reads "type": a name or a list of names.
func typesOf(s map[string]any, path []string) (map[string]bool, string) {
	out := map[string]bool{}
	switch t := s["type"].(type) {
	case string:
		out[t] = true
	case []any:
		for _, v := range t {
			name, _ := v.(string)
			out[name] = true
		}
	case nil:
		if _, ok := s["enum"]; ok {
			return out, ""
		}
		if _, ok := s["const"]; ok {
			return out, ""
		}
		return nil, ctxString(path) + "schema must have a 'type' key."
	default:
		return nil, ctxString(path) + fmt.Sprintf("type '%v' is not permitted.", t)
	}
	for name := range out {
		if !permittedType(name) {
			return nil, ctxString(path) + fmt.Sprintf("type '%s' is not permitted.", name)
		}
	}
	return out, ""
}

func (c *strictChecker) resolves(ref string) bool {
	if ref == "#" {
		return true
	}
	for _, defs := range []string{"$defs", "definitions"} {
		prefix := "#/" + defs + "/"
		if name, ok := strings.CutPrefix(ref, prefix); ok {
			m, _ := c.root[defs].(map[string]any)
			_, found := m[name]
			return found
		}
	}
	return false
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
