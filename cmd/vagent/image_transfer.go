package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vieter-v/vagent/oci"
)

func newImageLoadCmd(env *cliEnv) *cobra.Command {
	var af agentFlags
	var tag string
	c := &cobra.Command{
		Use:   "load [flags] FILE",
		Short: "put an image file into the store under a registry reference",
		Long: "Put the image of FILE into the store under a registry reference, so that builds and jobs\n" +
			"naming that reference find it without the registry: its registry is asked first, and\n" +
			"when it cannot be reached the loaded image is used, as for any image pulled before.\n\n" +
			"FILE is an OCI image layout directory, a tarball of one (skopeo copy ... oci-archive:),\n" +
			"or `docker save` output; oci:DIR[:TAG|@DIGEST], oci-archive:FILE[:TAG] and\n" +
			"docker-archive:FILE name one image of a file holding several. The reference is --tag,\n" +
			"or the name the file gives its image (docker save's repository tag, containerd's\n" +
			"io.containerd.image.name). Every blob is checked against its digest.",
		Args: exactArgs(1, "one FILE"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := af.load(env, c); err != nil {
				return err
			}
			if tag != "" {
				if r, err := oci.ParseReference(tag); err != nil || r.Transport != oci.TransportRegistry {
					return usageError("--tag %q: want a registry reference (HOST/REPO:TAG)", tag)
				}
			}
			if _, err := oci.LocalReference(args[0]); err != nil {
				return err
			}
			s, err := af.open(env)
			if err != nil {
				return err
			}
			img, err := s.Load(c.Context(), args[0], tag)
			if err != nil {
				return explain(err, af.dataDir)
			}
			fmt.Fprintf(env.stdout, "loaded %s\ndigest: %s\n", img.Ref, img.Digest)
			return nil
		},
	}
	af.register(c, "its data_dir")
	c.Flags().StringVarP(&tag, "tag", "t", "", "store the image as the registry reference `REF` (default: the name the file gives it)")
	return c
}

func newImagePushCmd(env *cliEnv) *cobra.Command {
	var af agentFlags
	var rf registryFlags
	c := &cobra.Command{
		Use:   "push [flags] SRC DST",
		Short: "copy an image of the store or an image file into a registry",
		Long: "Copy an image into the registry reference DST, or into the OCI image layout\n" +
			"oci:DIR[:TAG] (to carry it on a removable disk: `vagent image load` takes it back\n" +
			"under the same name). SRC is an image of the store, as\n" +
			"`vagent image ls` lists it (it is not pulled), or an image file as `vagent image load`\n" +
			"takes it. The registry settings are pull's: --insecure, --ca, --docker-config (or the\n" +
			"configuration's registries) for DST's host; mirrors serve pulls only. The digest pushed\n" +
			"is printed: pull it by HOST/REPO@DIGEST elsewhere.",
		Args: exactArgs(2, "SRC and DST"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := af.load(env, c); err != nil {
				return err
			}
			if r, err := oci.ParseReference(args[1]); err != nil || (r.Transport != oci.TransportRegistry && r.Transport != oci.TransportOCILayout) {
				return usageError("DST %q: want a registry reference (HOST/REPO:TAG) or oci:DIR[:TAG]", args[1])
			}
			opts, err := af.ociOptions(env, &rf)
			if err != nil {
				return err
			}
			s, err := af.open(env, opts...)
			if err != nil {
				return err
			}
			digest, err := s.Push(c.Context(), args[0], args[1])
			if err != nil {
				return explain(err, af.dataDir)
			}
			dst, _ := oci.ParseReference(args[1])
			fmt.Fprintf(env.stdout, "pushed %s\ndigest: %s\n", dst, digest)
			return nil
		},
	}
	af.register(c, "its data_dir and registries")
	rf.register(c.Flags())
	return c
}
