// Package namegen makes friendly, DNS-label-safe VM names such as
// "brisk-otter".
package namegen

import (
	"fmt"
	"math/rand/v2"
)

var adjectives = []string{
	"amber", "bold", "brisk", "calm", "clever", "cosmic", "crisp", "dapper", "eager", "fancy",
	"fuzzy", "gentle", "glad", "grand", "happy", "hazy", "jolly", "keen", "lively", "lucky",
	"mellow", "merry", "misty", "nimble", "noble", "plucky", "proud", "quick", "quiet", "rapid",
	"rosy", "rusty", "shiny", "silent", "sleek", "snappy", "solar", "spry", "steady", "sunny",
	"swift", "tidy", "vivid", "warm", "wild", "witty", "zesty", "zippy",
}

var nouns = []string{
	"badger", "beacon", "bison", "cedar", "comet", "coral", "crane", "delta", "ember", "falcon",
	"fern", "finch", "fjord", "gecko", "harbor", "heron", "ibex", "koala", "lark", "lemur",
	"lynx", "maple", "marten", "meadow", "moose", "nebula", "orca", "otter", "owl", "panda",
	"pebble", "pine", "quasar", "raven", "reef", "river", "robin", "sparrow", "spruce", "stork",
	"tapir", "tiger", "tulip", "walrus", "willow", "wombat", "yak", "zebra",
}

// New returns a random adjective-noun name.
func New() string {
	return adjectives[rand.IntN(len(adjectives))] + "-" + nouns[rand.IntN(len(nouns))]
}

// Unique returns a name for which taken reports false, adding a numeric
// suffix after a few collisions.
func Unique(taken func(string) bool) string {
	for i := 0; i < 20; i++ {
		if n := New(); !taken(n) {
			return n
		}
	}
	for {
		if n := fmt.Sprintf("%s-%d", New(), rand.IntN(10000)); !taken(n) {
			return n
		}
	}
}
