// Package launchtest is what a Go test needs beside internal/launch: a
// TestMain that builds the stack's binaries once for a package (Main), and
// a cleanup that stops a stack when its test ends and shows the logs of a
// failed one (CloseWhenDone). It is apart from launch so that the programs
// that run stacks (examples/demo, e2e/bench, e2e/soak) do not link the
// testing package.
package launchtest
