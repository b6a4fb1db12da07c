"""`picloud image build`: the base image for Docker-backend containers, built locally."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("image", help="container images (Docker backend)")
    isub = p.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    b = isub.add_parser("build", help="debootstrap a Debian minbase (cached) and docker-import it")
    b.add_argument("--tag", default="picloud/base:latest", help="image tag (default: %(default)s)")
    b.add_argument("--refresh", action="store_true", help="rebuild the cached root filesystem too")
    b.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    from topology.effects import docker_engine

    engine = docker_engine.client()
    result = docker_engine.build_base_image(engine, tag=args.tag, refresh=args.refresh)
    source = "cached rootfs" if result.cached_rootfs else f"debootstrap {result.seconds_debootstrap:.0f} s"
    print(f"{result.tag}: {result.image_id[:19]} {result.size_mb:.0f} MB "
          f"({source}, import {result.seconds_import:.0f} s)")
    return 0
