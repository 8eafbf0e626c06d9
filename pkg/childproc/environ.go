package childproc

import (
	"os"
	"slices"
)

// defaultPath is a child's PATH when neither its environment nor the
// parent's has one.
const defaultPath = "/usr/local/bin:/usr/bin:/bin"

// Environ returns a child's whole environment as exec.Cmd.Env wants it,
// sorted: env, and PATH (the parent's, or a default when the parent has
// none) unless env sets it. Nothing else of the parent's environment
// reaches the child. env is not modified.
func Environ(env map[string]string) []string {
	out := make([]string, 0, len(env)+1)
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	if _, ok := env["PATH"]; !ok {
		path := os.Getenv("PATH")
		if path == "" {
			path = defaultPath
		}
		out = append(out, "PATH="+path)
	}
	slices.Sort(out)
	return out
}
