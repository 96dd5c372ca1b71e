package main

import "testing"

func TestEscapePath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/etc/passwd", "/etc/passwd"},
		{"/a b/ü", "/a b/ü"},
		{"/a\nD /etc/passwd", `/a\nD /etc/passwd`},
		{`/back\slash`, `/back\\slash`},
		{`/a\nb`, `/a\\nb`}, // a real backslash-n is told apart from a newline
		{"/t\tr\r", `/t\tr\r`},
		{"/esc\x1b[31m", `/esc\x1b[31m`},
		{"/del\x7f", `/del\x7f`},
		{"/bad\xff\xfe", `/bad\xff\xfe`},
		{"/c1\u0085", `/c1\u0085`},
	} {
		if got := escapePath(tc.in); got != tc.want {
			t.Errorf("escapePath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
