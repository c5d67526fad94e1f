package affinity

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ParseConfig decodes and validates a configuration. Every problem found is
// returned at once, each as "file:line: field: reason".
func ParseConfig(file string, data []byte) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		return nil, yamlError(file, err)
	}
	var cfg Config
	dec = yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, yamlError(file, err)
	}
	v := &validator{file: file, lines: map[string]int{}}
	recordLines(&root, "", v.lines)
	cfg.applyDefaults()
	cfg.validate(v)
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	return &cfg, nil
}

// yamlError prefixes yaml.v3's "line N: ..." messages with the file name.
func yamlError(file string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		errs := make([]error, len(te.Errors))
		for i, e := range te.Errors {
			errs[i] = fmt.Errorf("%s:%s", file, strings.TrimPrefix(e, "line "))
		}
		return errors.Join(errs...)
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		return fmt.Errorf("%s:%s", file, rest)
	}
	return fmt.Errorf("%s: %s", file, msg)
}

// recordLines maps every field path ("pools[0].hosts[1].address") to the
// line it is written on.
func recordLines(n *yaml.Node, path string, out map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			recordLines(c, path, out)
		}
	case yaml.MappingNode:
		out[path] = n.Line
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := n.Content[i].Value
			if path != "" {
				p = path + "." + p
			}
			out[p] = n.Content[i].Line
			recordLines(n.Content[i+1], p, out)
		}
	case yaml.SequenceNode:
		out[path] = n.Line
		for i, c := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			out[p] = c.Line
			recordLines(c, p, out)
		}
	}
}

type validator struct {
	file  string
	lines map[string]int
	errs  []error
}

// errorf records a problem with the field at path, located at the line of
// the field or, when the field is absent, of its nearest written parent.
func (v *validator) errorf(path, format string, args ...any) {
	line, p := 0, path
	for {
		if l, ok := v.lines[p]; ok {
			line = l
			break
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	msg := fmt.Sprintf(format, args...)
	if line > 0 {
		v.errs = append(v.errs, fmt.Errorf("%s:%d: %s: %s", v.file, line, path, msg))
	} else {
		v.errs = append(v.errs, fmt.Errorf("%s: %s: %s", v.file, path, msg))
	}
}
