package launch

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestWriteEndpoints: the endpoints file holds exactly the listed
// backends, a fourth one (which envoy/app-endpoints.yaml has no line for)
// included, each on its own port.
func TestWriteEndpoints(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	s := &Stack{opts: Options{Dir: t.TempDir(), BackendIP: "127.0.0.1"}, envoyDir: filepath.Join(root, "envoy"),
		portMap: map[int]int{}}
	for i := range 4 {
		s.Backends = append(s.Backends, &Backend{Name: "backend-" + strconv.Itoa(i+1), IP: "127.0.0.1", Port: 20001 + i})
		s.portMap[yamlFirstBackend+i] = 20001 + i
	}
	for _, tc := range []struct {
		backends []int
		want     []string // hostname:port per endpoint line, in order
	}{
		{[]int{0, 1, 2}, []string{"backend-1:20001", "backend-2:20002", "backend-3:20003"}},
		{[]int{0, 1, 2, 3}, []string{"backend-1:20001", "backend-2:20002", "backend-3:20003", "backend-4:20004"}},
		{[]int{1, 3}, []string{"backend-2:20002", "backend-4:20004"}},
		{[]int{3}, []string{"backend-4:20004"}},
	} {
		if err := s.WriteEndpoints(tc.backends...); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(s.opts.Dir, endpointsFile))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, line := range strings.Split(string(data), "\n") {
			if !strings.Contains(line, "- endpoint:") {
				continue
			}
			name := line[strings.Index(line, "hostname: ")+len("hostname: "):]
			name = name[:strings.Index(name, ",")]
			got = append(got, name+":"+portValueRE.FindStringSubmatch(line)[1])
		}
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("backends %v: endpoints %v, want %v", tc.backends, got, tc.want)
		}
	}
}

// TestLoadAdmins: a load block names the admin API of every Envoy of the
// stack, those reserved for Options.Envoys included.
func TestLoadAdmins(t *testing.T) {
	for _, tc := range []struct {
		name     string
		gateways []*Gateway
		reserved []gatewayPorts
		want     string
	}{
		{"one Envoy", nil, nil, "envoy_admins: ['127.0.0.1:9100']"},
		{"a gateway", []*Gateway{{AdminPort: 9200}}, nil, "envoy_admins: ['127.0.0.1:9100', '127.0.0.1:9200']"},
		{"reserved", []*Gateway{{AdminPort: 9200}}, []gatewayPorts{{listen: 9301, admin: 9300}},
			"envoy_admins: ['127.0.0.1:9100', '127.0.0.1:9200', '127.0.0.1:9300']"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := &Stack{opts: Options{Dir: dir, Mode: "verified", Load: &Load{}}, AdminPort: 9100,
				Gateways: tc.gateways, reserved: tc.reserved, ConfigPath: filepath.Join(dir, "config.yaml"),
				Backends: []*Backend{{Name: "backend-1", IP: "127.0.0.1", Port: 20001}}}
			if err := s.WriteConfig(0); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(s.ConfigPath)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), tc.want) {
				t.Errorf("config has no %q:\n%s", tc.want, data)
			}
		})
	}
}
