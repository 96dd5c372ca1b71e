package image

import (
	"reflect"
	"strings"
	"testing"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestApplyChanges(t *testing.T) {
	base := func() v1.ImageConfig {
		return v1.ImageConfig{Env: []string{"PATH=/bin", "HOME=/root"}, Cmd: []string{"old"}}
	}
	for _, tc := range []struct {
		name    string
		changes []string
		want    func(*v1.ImageConfig)
	}{
		{"cmd exec", []string{`CMD ["sh", "-c", "echo $HOME"]`}, func(c *v1.ImageConfig) { c.Cmd = []string{"sh", "-c", "echo $HOME"} }},
		{"cmd shell, not expanded", []string{"CMD echo $HOME"}, func(c *v1.ImageConfig) { c.Cmd = []string{"/bin/sh", "-c", "echo $HOME"} }},
		{"cmd lowercase", []string{"cmd top"}, func(c *v1.ImageConfig) { c.Cmd = []string{"/bin/sh", "-c", "top"} }},
		{"entrypoint", []string{`ENTRYPOINT ["/init"]`}, func(c *v1.ImageConfig) { c.Entrypoint = []string{"/init"} }},
		{"entrypoint cleared", []string{`ENTRYPOINT []`}, func(c *v1.ImageConfig) { c.Entrypoint = []string{} }},
		{"env forms", []string{`ENV A=1 B="two words"`, "ENV C three words", "ENV PATH=/usr/bin:$PATH", `ENV D='$HOME' E=\$HOME`},
			func(c *v1.ImageConfig) {
				c.Env = []string{"PATH=/usr/bin:/bin", "HOME=/root", "A=1", "B=two words", "C=three words", "D=$HOME", "E=$HOME"}
			}},
		{"label", []string{`LABEL a=1 "b c"="d e"`, "LABEL home=$HOME"}, func(c *v1.ImageConfig) {
			c.Labels = map[string]string{"a": "1", "b c": "d e", "home": "/root"}
		}},
		{"expose", []string{"EXPOSE 80 53/udp"}, func(c *v1.ImageConfig) {
			c.ExposedPorts = map[string]struct{}{"80/tcp": {}, "53/udp": {}}
		}},
		{"volume", []string{"VOLUME /a /b", `VOLUME ["/c d"]`}, func(c *v1.ImageConfig) {
			c.Volumes = map[string]struct{}{"/a": {}, "/b": {}, "/c d": {}}
		}},
		{"user workdir stopsignal", []string{"USER app:staff", "WORKDIR $HOME/src", "STOPSIGNAL SIGQUIT"}, func(c *v1.ImageConfig) {
			c.User, c.WorkingDir, c.StopSignal = "app:staff", "/root/src", "SIGQUIT"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, want := base(), base()
			tc.want(&want)
			if err := applyChanges(&got, tc.changes); err != nil {
				t.Fatalf("applyChanges(%q): %v", tc.changes, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("applyChanges(%q):\n got %+v\nwant %+v", tc.changes, got, want)
			}
		})
	}
	for _, tc := range []struct{ change, want string }{
		{"FROB x", `change "FROB x": unknown instruction "FROB"`},
		{"RUN make", `change "RUN make": unknown instruction: want CMD, ENTRYPOINT`},
		{"CMD", `change "CMD": missing argument`},
		{"ENV  ", `change "ENV  ": missing argument`},
		{"ENV A", `change "ENV A": ENV must have two arguments`},
		{"WORKDIR ${X", `change "WORKDIR ${X": `},
		{"SHELL sh -c", `change "SHELL sh -c": SHELL requires the arguments to be in JSON form`},
	} {
		c := base()
		if err := applyChanges(&c, []string{tc.change}); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("applyChanges(%q): err %v, want %q", tc.change, err, tc.want)
		}
	}
}
