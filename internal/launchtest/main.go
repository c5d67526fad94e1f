package launchtest

import (
	"fmt"
	"os"
	"testing"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

// Main is a TestMain for a package that runs stacks: it builds the
// binaries into a temporary folder, lets more reach it (more may build its
// own into dir and change bins), runs the tests and removes the folder. It
// returns the exit code: TestMain passes it to os.Exit.
func Main(m *testing.M, bins *launch.Binaries, more func(dir string, bins *launch.Binaries) error) int {
	dir, built, remove, err := launch.BuildTemp("test")
	if err != nil {
		fmt.Fprintln(os.Stderr, "the tests need the binaries and Envoy:", err)
		return 1
	}
	defer remove()
	*bins = built
	if more != nil {
		if err := more(dir, bins); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}
