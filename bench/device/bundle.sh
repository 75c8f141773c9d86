#!/usr/bin/env bash
# Packs what the GPU benchmark needs beyond a CUDA machine's own Python into .bundle/site.tar.xz.
#
#   bash bench/device/bundle.sh     # here, with PyPI reachable; then bench/device/run.sh there
#
# The GPU machine this workplace lends has no network and a python3 (3.12) with torch,
# torchvision, transformers, pyarrow, numpy, opencv-python-headless and the usual utilities, but
# not Prefect, LanceDB, ultralytics or pydantic. Those, with their own needs, travel here as one
# archive, which must stay under the 64 MiB a call may carry with the repository (~10 MB):
# - wheels already on that machine are left out (torch's CUDA libraries above all);
# - prefect's two web UIs are dropped (nothing serves them in a benchmark);
# - polars, apprise and docker, which the index and query paths never import, are dropped;
# - SQLAlchemy's compiled speed-ups are dropped: it falls back to the same code in Python;
# - asyncpg (PostgreSQL only; the temporary Prefect API uses SQLite) becomes a stub, since the
#   Prefect server imports it at start-up.
# LanceDB's library alone is 41 MB compressed with xz -9e.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
already_there="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs certifi \
charset-normalizer click cloudpickle colorama contourpy cycler filelock fonttools frozenlist fsspec h11 httpcore httpx \
huggingface-hub humanize idna jinja2 kiwisolver markdown-it-py markupsafe matplotlib mdurl msgpack multidict networkx \
numpy packaging pathspec pillow pip pluggy prometheus-client propcache psutil pyarrow pygments pyparsing \
python-dateutil pyyaml regex requests rich safetensors scipy shellingham six sympy mpmath tokenizers torch torchvision \
tqdm transformers triton typer typing-extensions urllib3 uvloop wrapt yarl filelock jsonpointer"
python3 -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$work/wheels" \
    prefect==3.9.1 lancedb==0.40.0 ultralytics==8.4.190 pydantic==2.14.4
mkdir "$work/site"
for wheel in "$work"/wheels/*.whl; do
    name=$(basename "$wheel" | sed -E 's/-[0-9].*//' | tr 'A-Z_' 'a-z-')
    case " $already_there " in *" $name "*) continue ;; esac
    case $name in nvidia-* | cuda-* | opencv-python | polars* | apprise | docker | asyncpg) continue ;; esac
    unzip -q -o "$wheel" -d "$work/site"
done
rm -rf "$work"/site/prefect/server/ui "$work"/site/prefect/server/ui-v2
find "$work/site/sqlalchemy" -name "*_cy.*.so" -delete
find "$work/site" -name "*.pyc" -delete
mkdir "$work/site/asyncpg"
cat >"$work/site/asyncpg/__init__.py" <<'STUB'
"""Stand-in for asyncpg on the benchmark's GPU machine: Prefect imports it, SQLite never uses it."""


class _Exceptions:
    def __getattr__(self, name: str) -> type[Exception]:
        return type(name, (Exception,), {})


exceptions = _Exceptions()


class Connection:
    pass


async def connect(*args: object, **kwargs: object) -> Connection:
    raise RuntimeError("asyncpg is a stub here: PostgreSQL is not available in the benchmark bundle")
STUB
mkdir -p .bundle
tar -C "$work/site" -cf - . | xz -9e -T0 >.bundle/site.tar.xz
ls -l .bundle/site.tar.xz
