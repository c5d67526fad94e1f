package examples

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/internal/launch"
	"github.com/envoy-affinity/envoy-affinity/internal/launchtest"
)

// bins are the project's programs and Envoy, built once for the tests that
// run them.
var bins launch.Binaries

func TestMain(m *testing.M) { os.Exit(launchtest.Main(m, &bins, nil)) }

// recipeDirs are the folders whose YAML files are Kubernetes objects.
var recipeDirs = []string{"kubernetes", "istio", "envoy-gateway"}

// doc is one YAML document of a recipe file.
type doc struct {
	file      string
	index     int
	kind      string
	name      string
	namespace string
	node      *yaml.Node
}

func (d doc) String() string {
	return fmt.Sprintf("%s#%d (%s %s/%s)", d.file, d.index, d.kind, d.namespace, d.name)
}

// readDocs returns every document of a YAML file; a document that does not
// parse fails the test.
func readDocs(t *testing.T, path string) []doc {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []doc
	for i := 0; ; i++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		var head struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name      string `yaml:"name"`
				Namespace string `yaml:"namespace"`
			} `yaml:"metadata"`
		}
		if err := n.Decode(&head); err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		out = append(out, doc{file: path, index: i, kind: head.Kind, name: head.Metadata.Name, namespace: head.Metadata.Namespace, node: &n})
	}
	if len(out) == 0 {
		t.Fatalf("%s: no YAML document", path)
	}
	return out
}

// recipeDocs returns the documents of every YAML file of a recipe folder.
func recipeDocs(t *testing.T, dir string) []doc {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("%s: no YAML files (%v)", dir, err)
	}
	var out []doc
	for _, f := range files {
		out = append(out, readDocs(t, f)...)
	}
	return out
}

// find returns the one document of that kind and name in docs.
func find(t *testing.T, docs []doc, kind, name string) doc {
	t.Helper()
	var hits []doc
	for _, d := range docs {
		if d.kind == kind && d.name == name {
			hits = append(hits, d)
		}
	}
	if len(hits) != 1 {
		t.Fatalf("want one %s %q, found %d", kind, name, len(hits))
	}
	return hits[0]
}

// decodeStrict decodes a document into v; a field v does not have fails.
func decodeStrict(d doc, v any) error {
	data, err := yaml.Marshal(d.node)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", d, err)
	}
	return nil
}

// mustDecode is decodeStrict that fails the test.
func mustDecode[T any](t *testing.T, d doc) T {
	t.Helper()
	var v T
	if err := decodeStrict(d, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// yamlToProto decodes YAML (or a value decoded from YAML) into m with
// protojson, through JSON (Envoy's YAML is proto3 JSON written as YAML):
// unknown fields, unknown "@type"s and wrong types are errors.
func yamlToProto(v any, m proto.Message) error {
	if data, ok := v.([]byte); ok {
		var tree any
		if err := yaml.Unmarshal(data, &tree); err != nil {
			return err
		}
		v = tree
	}
	j, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return protojson.Unmarshal(j, m)
}

// TestRecipeManifestsDecode decodes every document of every recipe into the
// schema of its kind (the fields the recipes use, written from the
// Kubernetes, Gateway API and Envoy Gateway API types; the EnvoyFilter
// spec into Istio's own proto), so a misspelt or misplaced field fails.
func TestRecipeManifestsDecode(t *testing.T) {
	for _, dir := range recipeDirs {
		for _, d := range recipeDocs(t, dir) {
			t.Run(fmt.Sprintf("%s/%s#%d", dir, filepath.Base(d.file), d.index), func(t *testing.T) {
				if d.name == "" {
					t.Fatalf("%s: no metadata.name", d)
				}
				if err := decodeKind(d); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// readmeBlocks returns the ```yaml blocks of a README, each parsed; a block
// that does not parse fails the test.
func readmeBlocks(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range yamlFenceRE.FindAllStringSubmatch(string(data), -1) {
		var v any
		if err := yaml.Unmarshal([]byte(m[1]), &v); err != nil {
			t.Fatalf("%s: a yaml block does not parse: %v\n%s", path, err, m[1])
		}
		out = append(out, m[1])
	}
	return out
}

var yamlFenceRE = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// serviceConfigs returns the README's yaml blocks that are service
// configurations (they have a top-level pools key).
func serviceConfigs(t *testing.T, readme string) []string {
	t.Helper()
	var out []string
	for _, b := range readmeBlocks(t, readme) {
		var top map[string]any
		if yaml.Unmarshal([]byte(b), &top) == nil && top["pools"] != nil {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no service configuration", readme)
	}
	return out
}

// parseServiceConfig loads a recipe's service configuration with the real
// loader: affinity.ParseConfig, then LoadFile with a fresh key in the
// environment variable it names (where the Secret puts the keys).
func parseServiceConfig(t *testing.T, name, text string) *affinity.Config {
	t.Helper()
	cfg, err := affinity.ParseConfig(name, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	key := launch.NewKeyLine("k1", "ed25519")
	getenv := func(v string) string {
		if v == cfg.Keys.Env {
			return key
		}
		return ""
	}
	if _, err := affinity.LoadFile(path, getenv, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	return cfg
}
