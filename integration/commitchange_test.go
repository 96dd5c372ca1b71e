package integration

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestImageCommitChangeGrammar: commit -c reads an instruction as a
// Dockerfile line (quotes, escapes, both ENV forms, JSON or shell form)
// and expands variables against the image's environment, as docker
// commit --change does.
func TestImageCommitChangeGrammar(t *testing.T) {
	s := newCLIStore(t)
	_, app := imgFixtures(t, "gzip", "gzip")
	s.imgMust("import", writeLayout(t, filepath.Join(t.TempDir(), "app"), app, "1.0"), "app:1.0")
	s.mustLine("create", "--name", "cg", "app:1.0")
	s.mustLine("commit",
		"-c", `ENV PATH=/opt/bin:$PATH GREETING="hello world" LITERAL='$APP_ENV' ESCAPED=\$HOME`,
		"-c", "ENV LEGACY  two  words",
		"-c", `LABEL "com.example.env"="${APP_ENV:-dev}" unset=${NOPE:-fallback}`,
		"-c", "CMD echo $APP_ENV",
		"-c", `VOLUME ["/data", "/var/my logs"]`,
		"-c", "EXPOSE 53/udp 9000",
		"-c", "WORKDIR /srv/$APP_ENV",
		"cg", "app:grammar")
	c := s.inspectImage("app:grammar").Config
	wantEnv := []string{"PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "APP_ENV=prod",
		"GREETING=hello world", "LITERAL=$APP_ENV", "ESCAPED=$HOME", "LEGACY=two  words"}
	if !reflect.DeepEqual(c.Env, wantEnv) {
		t.Errorf("Env %q\nwant %q", c.Env, wantEnv)
	}
	wantLabels := map[string]string{"org.opencontainers.image.title": "app", "com.example.env": "prod", "unset": "fallback"}
	if !reflect.DeepEqual(c.Labels, wantLabels) {
		t.Errorf("Labels %q, want %q", c.Labels, wantLabels)
	}
	if want := []string{"/bin/sh", "-c", "echo $APP_ENV"}; !reflect.DeepEqual(c.Cmd, want) {
		t.Errorf("Cmd %q, want %q (shell form, expanded by the shell at run time)", c.Cmd, want)
	}
	if _, ok := c.Volumes["/var/my logs"]; !ok || len(c.Volumes) != 2 {
		t.Errorf("Volumes %v, want /data and /var/my logs", c.Volumes)
	}
	if len(c.ExposedPorts) != 3 || c.WorkingDir != "/srv/prod" {
		t.Errorf("ExposedPorts %v WorkingDir %q: want 8080/tcp 53/udp 9000/tcp, /srv/prod", c.ExposedPorts, c.WorkingDir)
	}

	before := s.imgState()
	for _, tc := range []struct{ change, want string }{
		{`ENV A="unclosed`, `change "ENV A=\"unclosed"`},
		{"SHELL sh -c", "SHELL requires the arguments to be in JSON form"},
		{"ENV A=1 B", `can't find = in "B"`},
		{"RUN make", "unknown instruction: want CMD, ENTRYPOINT"},
	} {
		r := s.imgRun("commit", "-c", tc.change, "cg", "app:bad")
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("commit -c %q: want exit 1 and %q on stderr; got %v", tc.change, tc.want, r)
		}
	}
	if after := s.imgState(); after != before {
		t.Errorf("refused commits changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
