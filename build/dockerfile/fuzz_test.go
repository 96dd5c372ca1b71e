package dockerfile

import (
	"strings"
	"testing"
)

// FuzzParse checks that no input makes Parse, Needed or ParseChange
// panic, and that an error is a located *Error or a plain message.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"FROM alpine AS a\nRUN <<EOF\nx\nEOF\nFROM a\nCOPY --from=0 / /\n",
		"# escape=`\nARG A=${B:-c}\nFROM $A\nONBUILD RUN x `\n y\n",
		"FROM x\nHEALTHCHECK --interval=1s CMD [\"a\"]\nENV A=\"b\" C d\n",
		"FROM x\nCOPY <<-'E' /f\n\tbody\n\tE\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		file, err := Parse(strings.NewReader(src), map[string]string{"A": "1"})
		if err != nil {
			if err.Error() == "" {
				t.Errorf("Parse(%q): empty error", src)
			}
			return
		}
		if len(file.Stages) == 0 {
			t.Fatalf("Parse(%q): no error and no stage", src)
		}
		for _, s := range file.Stages {
			if _, err := file.Needed(stageLabel(s)); err != nil && !strings.Contains(err.Error(), "circular") {
				t.Errorf("Needed(%s): %v", stageLabel(s), err)
			}
		}
		ParseChange(src)
	})
}
