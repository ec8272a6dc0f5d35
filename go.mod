module github.com/bangerdev/banger

go 1.26
