#!/usr/bin/env python3
"""Writes a container image as a `docker save` style tarball (one layer), with no container
engine: `ctr images import`, `docker load` and `podman load` accept the result.

usage: mkimage.py OUT.tar NAME:TAG --user UID:GID --entrypoint JSON [--cmd JSON]
                  [--env K=V]... [--add SRC:DEST]... [--link TARGET:DEST]...

The layer holds the --add files (mode kept, owned by root), the --link symlinks, /tmp
(1777), and an /etc/passwd and /etc/group naming the non-root user. Timestamps are fixed, so
the same inputs give the same image ID. Only the Python standard library is used."""
import argparse
import hashlib
import io
import json
import os
import tarfile

EPOCH = 0


def add_dir(tar, name, mode=0o755):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, EPOCH
    tar.addfile(info)


def add_bytes(tar, name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, EPOCH
    tar.addfile(info, io.BytesIO(data))


def layer(args, uid, gid):
    files = [a.split(":", 1) for a in args.add]
    links = [a.split(":", 1) for a in args.link]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = {"etc", "tmp"}
        for _, dest in files + links:
            parts = dest.strip("/").split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        for d in sorted(dirs):
            add_dir(tar, d, 0o1777 if d == "tmp" else 0o755)
        add_bytes(tar, "etc/passwd", f"root:x:0:0:root:/:/sbin/nologin\nnonroot:x:{uid}:{gid}:nonroot:/:/sbin/nologin\n".encode())
        add_bytes(tar, "etc/group", f"root:x:0:\nnonroot:x:{gid}:\n".encode())
        for src, dest in sorted(files, key=lambda f: f[1]):
            with open(src, "rb") as f:
                data = f.read()
            add_bytes(tar, dest.strip("/"), data, os.stat(src).st_mode & 0o777)
        for target, dest in sorted(links, key=lambda l: l[1]):
            info = tarfile.TarInfo(dest.strip("/"))
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, EPOCH
            tar.addfile(info)
    return buf.getvalue()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("ref")
    p.add_argument("--user", default="65532:65532")
    p.add_argument("--entrypoint", required=True, help="JSON list")
    p.add_argument("--cmd", default="[]", help="JSON list")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--add", action="append", default=[], metavar="SRC:DEST")
    p.add_argument("--link", action="append", default=[], metavar="TARGET:DEST")
    args = p.parse_args()
    uid, gid = args.user.split(":")

    data = layer(args, uid, gid)
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "User": args.user,
            "Entrypoint": json.loads(args.entrypoint),
            "Cmd": json.loads(args.cmd),
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"] + args.env,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "images/mkimage.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.split(":")[1] + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [args.ref], "Layers": [layer_name]}]
    with tarfile.open(args.out + ".tmp", "w") as out:
        add_dir(out, diff_id.split(":")[1])
        add_bytes(out, layer_name, data)
        add_bytes(out, config_name, config_bytes)
        add_bytes(out, "manifest.json", json.dumps(manifest).encode())
    os.replace(args.out + ".tmp", args.out)
    print(f"{args.out}: {args.ref} layer {len(data)} bytes, id sha256:{config_name[:-5]}")


if __name__ == "__main__":
    main()
