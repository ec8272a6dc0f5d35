package imagepull

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
)

// resolveDeferred writes the hardlinks whose target was not written from
// their own layer before them. When an upper layer deleted or replaced the
// target, the first link gets the target's content (its layer is read
// again) and the others link to it; otherwise the target was written from
// elsewhere and the link points at it.
func (f *flattener) resolveDeferred(ctx context.Context, layers []Source) error {
	type key struct {
		layer  int
		target string
	}
	groups := map[key][]deferredLink{}
	var order []key
	for _, d := range f.deferred {
		if !d.targetHidden {
			if f.state[d.target]&fFile == 0 {
				return fmt.Errorf("layer %s: hardlink %q -> %q: target not found", layers[d.layer].Digest, d.name, d.target)
			}
			d.hdr.Linkname = d.target
			if err := f.ensureParents(d.name); err != nil {
				return err
			}
			if err := f.emit(d.hdr, d.name, nil); err != nil {
				return err
			}
			f.state[d.name] |= fFile
			continue
		}
		k := key{d.layer, d.target}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], d)
	}
	byLayer := map[int][]key{}
	for _, k := range order {
		byLayer[k.layer] = append(byLayer[k.layer], k)
	}
	for layer := len(layers) - 1; layer >= 0; layer-- {
		keys := byLayer[layer]
		if len(keys) == 0 {
			continue
		}
		want := map[string][]deferredLink{}
		for _, k := range keys {
			want[k.target] = groups[k]
		}
		if err := f.recoverTargets(ctx, layers[layer], want); err != nil {
			return err
		}
	}
	return nil
}

// recoverTargets re-reads one layer and writes each wanted target's content
// under its first link name.
func (f *flattener) recoverTargets(ctx context.Context, src Source, want map[string][]deferredLink) error {
	rc, err := src.Open()
	if err != nil {
		return fmt.Errorf("layer %s: %w", src.Digest, err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for len(want) > 0 {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("layer %s: reading tar: %w", src.Digest, err)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			continue
		}
		links, ok := want[name]
		if !ok || hdr.Typeflag == tar.TypeLink || hdr.Typeflag == tar.TypeDir {
			continue
		}
		delete(want, name)
		first := links[0].name
		if err := f.ensureParents(first); err != nil {
			return fmt.Errorf("layer %s: %w", src.Digest, err)
		}
		if err := f.emit(hdr, first, tr); err != nil {
			return fmt.Errorf("layer %s: %w", src.Digest, err)
		}
		f.state[first] |= fFile
		meta := linkMeta{mode: hdr.Mode, uid: hdr.Uid, gid: hdr.Gid, mtime: hdr.ModTime}
		for _, l := range links[1:] {
			l.hdr.Linkname = first
			applyMeta(l.hdr, meta)
			if err := f.ensureParents(l.name); err != nil {
				return fmt.Errorf("layer %s: %w", src.Digest, err)
			}
			if err := f.emit(l.hdr, l.name, nil); err != nil {
				return fmt.Errorf("layer %s: %w", src.Digest, err)
			}
			f.state[l.name] |= fFile
		}
	}
	for target, links := range want {
		return fmt.Errorf("layer %s: hardlink %q -> %q: target not found", src.Digest, links[0].name, target)
	}
	return nil
}
