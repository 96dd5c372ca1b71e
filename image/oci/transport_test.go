package oci

import "testing"

func TestParseLocation(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Location
	}{
		{"dir", Location{Path: "dir"}},
		{"/tmp/x.tar", Location{Path: "/tmp/x.tar"}},
		{"-", Location{Path: "-"}},
		{"./a:b", Location{Path: "./a:b"}},
		{"backup:2024.tar", Location{Path: "backup:2024.tar"}},
		{"oci:dir", Location{Transport: TransportLayout, Path: "dir"}},
		{"oci:dir:v2", Location{Transport: TransportLayout, Path: "dir", Ref: "v2"}},
		{"oci:dir:", Location{Transport: TransportLayout, Path: "dir"}},
		{"oci:/a:b/c", Location{Transport: TransportLayout, Path: "/a:b/c"}},
		{"oci:/a:b/c:latest", Location{Transport: TransportLayout, Path: "/a:b/c", Ref: "latest"}},
		{"oci:/a:b", Location{Transport: TransportLayout, Path: "/a", Ref: "b"}},
		{"oci:dir:-bad", Location{Transport: TransportLayout, Path: "dir:-bad"}},
		{"oci:dir:1.0_rc-1", Location{Transport: TransportLayout, Path: "dir", Ref: "1.0_rc-1"}},
		{"oci-archive:x.tar", Location{Transport: TransportArchive, Path: "x.tar"}},
		{"oci-archive:x.tar.gz:v1", Location{Transport: TransportArchive, Path: "x.tar.gz", Ref: "v1"}},
		{"docker-archive:x.tar", Location{Transport: TransportDockerArchive, Path: "x.tar"}},
		{"docker-archive:x.tar:busybox", Location{Transport: TransportDockerArchive, Path: "x.tar", Ref: "busybox"}},
		{"docker-archive:x.tar:localhost:5000/app:v1", Location{Transport: TransportDockerArchive, Path: "x.tar", Ref: "localhost:5000/app:v1"}},
		{"docker://busybox:latest", Location{Transport: TransportRegistry, Path: "busybox:latest"}},
	} {
		got, err := ParseLocation(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseLocation(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		if tc.in != "oci:dir:" {
			if s := got.String(); s != tc.in {
				t.Errorf("ParseLocation(%q).String() = %q", tc.in, s)
			}
		}
	}
	for _, bad := range []string{"", "oci:", "oci::v2", "oci-archive:", "docker-archive:", "docker-archive::x", "docker://", "dir:/x", "containers-storage:x"} {
		if l, err := ParseLocation(bad); err == nil {
			t.Errorf("ParseLocation(%q) = %+v, want an error", bad, l)
		}
	}
	if !IsRegistry("docker://x") || IsRegistry("docker-archive:x") || IsRegistry("oci:docker://") {
		t.Error("IsRegistry is wrong")
	}
}
