package dockerfile

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// splitWords splits s at unquoted white space. Quotes and escapes are kept
// in the words; expand removes them.
func splitWords(s string, escape byte) ([]string, error) {
	var words []string
	var cur strings.Builder
	have := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == 0 && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			if have {
				words = append(words, cur.String())
				cur.Reset()
				have = false
			}
			continue
		case c == escape && quote != '\'':
			cur.WriteByte(c)
			if i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			}
		case quote != 0:
			cur.WriteByte(c)
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
			cur.WriteByte(c)
		default:
			cur.WriteByte(c)
		}
		have = true
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if have {
		words = append(words, cur.String())
	}
	return words, nil
}

// Lookup returns the value of a variable and whether it is set.
type Lookup func(name string) (string, bool)

// errUnset is returned by ${VAR:?msg} for an unset variable.
var errUnset = errors.New("variable not set")

// Expand performs the builder's processing of one word: quote removal,
// escapes, and variable substitution of $VAR, ${VAR}, ${VAR:-word},
// ${VAR-word}, ${VAR:+word}, ${VAR+word} and ${VAR:?message}. Single quotes
// keep their content literal; the escape character makes the next
// character literal (inside double quotes only before $, ", ` and itself).
func Expand(word string, lookup Lookup) (string, error) {
	return expand(word, lookup, '\\')
}

func expand(word string, lookup Lookup, escape byte) (string, error) {
	x := &expander{s: word, lookup: lookup, escape: escape}
	out, err := x.run(0)
	if err != nil {
		return "", err
	}
	return out, nil
}

type expander struct {
	s      string
	i      int
	lookup Lookup
	escape byte
	// literal makes quotes and escapes ordinary characters (JSON-form
	// elements): only variables are substituted.
	literal bool
}

// expandLiteral substitutes variables in s, keeping every other
// character as is.
func expandLiteral(s string, lookup Lookup) (string, error) {
	x := &expander{s: s, lookup: lookup, literal: true}
	return x.run(0)
}

// run processes until the end of the string or, when stop is not 0, an
// unquoted stop character (the closing brace of ${...}), which it consumes.
func (x *expander) run(stop byte) (string, error) {
	var b strings.Builder
	var quote byte
	for x.i < len(x.s) {
		c := x.s[x.i]
		switch {
		case quote == 0 && stop != 0 && c == stop:
			x.i++
			return b.String(), nil
		case x.literal && c != '$':
			x.i++
			b.WriteByte(c)
		case quote == '\'':
			x.i++
			if c == '\'' {
				quote = 0
				continue
			}
			b.WriteByte(c)
		case c == x.escape:
			x.i++
			if x.i >= len(x.s) {
				b.WriteByte(c)
				continue
			}
			n := x.s[x.i]
			if quote == '"' && n != '$' && n != '"' && n != '`' && n != x.escape {
				b.WriteByte(c)
				continue
			}
			b.WriteByte(n)
			x.i++
		case c == '"':
			x.i++
			if quote == '"' {
				quote = 0
			} else {
				quote = '"'
			}
		case c == '\'' && quote == 0:
			x.i++
			quote = '\''
		case c == '$':
			v, err := x.variable()
			if err != nil {
				return "", err
			}
			b.WriteString(v)
		default:
			x.i++
			b.WriteByte(c)
		}
	}
	if stop != 0 {
		return "", fmt.Errorf("missing } in %q", x.s)
	}
	if quote != 0 {
		return "", fmt.Errorf("unterminated %c quote in %q", quote, x.s)
	}
	return b.String(), nil
}

func isNameChar(c byte, first bool) bool {
	return c == '_' || unicode.IsLetter(rune(c)) || (!first && c >= '0' && c <= '9')
}

// variable expands the reference starting at the $ at x.i.
func (x *expander) variable() (string, error) {
	x.i++ // $
	if x.i >= len(x.s) {
		return "$", nil
	}
	if x.s[x.i] != '{' {
		start := x.i
		for x.i < len(x.s) && isNameChar(x.s[x.i], x.i == start) {
			x.i++
		}
		if x.i == start {
			return "$", nil
		}
		v, _ := x.lookup(x.s[start:x.i])
		return v, nil
	}
	x.i++ // {
	start := x.i
	for x.i < len(x.s) && isNameChar(x.s[x.i], x.i == start) {
		x.i++
	}
	name := x.s[start:x.i]
	if name == "" {
		return "", fmt.Errorf("bad substitution in %q", x.s)
	}
	if x.i >= len(x.s) {
		return "", fmt.Errorf("missing } in %q", x.s)
	}
	val, set := x.lookup(name)
	if x.s[x.i] == '}' {
		x.i++
		return val, nil
	}
	colon := false
	if x.s[x.i] == ':' {
		colon = true
		x.i++
		if x.i >= len(x.s) {
			return "", fmt.Errorf("missing } in %q", x.s)
		}
	}
	op := x.s[x.i]
	if op != '-' && op != '+' && op != '?' {
		return "", fmt.Errorf("unsupported substitution ${%s%s%c...} in %q", name, map[bool]string{true: ":"}[colon], op, x.s)
	}
	x.i++
	word, err := x.run('}')
	if err != nil {
		return "", err
	}
	present := set && (!colon || val != "")
	switch op {
	case '-':
		if present {
			return val, nil
		}
		return word, nil
	case '+':
		if present {
			return word, nil
		}
		return "", nil
	default: // '?'
		if present {
			return val, nil
		}
		if word == "" {
			word = "not set"
		}
		return "", fmt.Errorf("%s: %s: %w", name, word, errUnset)
	}
}
