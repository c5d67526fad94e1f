package affinity

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// configFields lists every field path of the configuration file, as the
// reference names them: "pools[].cookie.name".
func configFields(t reflect.Type, prefix string, out *[]string) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		if t.Kind() == reflect.Slice {
			prefix += "[]"
		}
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == reflect.TypeOf(time.Time{}) {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		*out = append(*out, path)
		configFields(f.Type, path, out)
	}
}

// TestConfigurationReference fails when a field of the configuration file is
// missing from docs/configuration.md, so the reference cannot drift.
func TestConfigurationReference(t *testing.T) {
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var fields []string
	configFields(reflect.TypeOf(Config{}), "", &fields)
	for _, f := range fields {
		if !strings.Contains(string(doc), "`"+f+"`") {
			t.Errorf("docs/configuration.md does not document `%s`", f)
		}
	}
	if len(fields) < 40 {
		t.Fatalf("only %d fields found: the walk is broken", len(fields))
	}
}

// referenceRow is the row of docs/configuration.md that documents field.
func referenceRow(t *testing.T, field string) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(doc)) {
		if strings.HasPrefix(line, "| `"+field+"` |") {
			return line
		}
	}
	t.Fatalf("docs/configuration.md has no row for `%s`", field)
	return ""
}
