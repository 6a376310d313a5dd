#!/usr/bin/env python3
"""wgmtp next to llama.cpp: the same GGUF files, the same adapter, one run, one table.

What it does, in order:

1. Builds llama.cpp's Vulkan backend and tools (`llama-bench`, `llama-completion`) from the
   `llama-cpp-python` source distribution on PyPI (its sdist vendors llama.cpp's sources), into
   ~/.cache/wgmtp/llamacpp-<version>/, reusing a previous build. Debian 12's Vulkan headers
   (1.3.239) lack VK_EXT_layer_settings, which llama.cpp only uses to configure the validation
   layers: the script guards that block with `#ifdef VK_EXT_layer_settings` in the unpacked
   sources (a no-op with newer headers). Missing build tools are installed with apt-get
   (cmake, g++, glslc, libvulkan-dev, mesa-vulkan-drivers) when running as root.
   A small greedy-decoding helper (tools/llamacpp/greedy.cpp) is compiled against the same
   libllama, to compare generated token ids exactly.
2. Writes (or reuses) synthetic qwen35 GGUFs with tools/make_model.py, with the MTP block,
   in Q8_0 and Q4_K_M (all dims multiples of 256, so K-quants apply everywhere).
3. Runs `llama-bench -p P -n N -ngl 99 -r R -o json` on the Vulkan device that matches the
   adapter (lavapipe on a CPU-only machine: llama.cpp hides CPU-type Vulkan devices unless
   GGML_VK_VISIBLE_DEVICES names them), then llama.cpp's own CPU backend for scale (no Vulkan
   device visible), then `wgmtp bench -p P -n N --spec-draft-n-max 0 --reps R --json` on the
   same files, and prints a markdown table (ratio = wgmtp / llama.cpp Vulkan).
4. Checks that llama.cpp loads each file and compares greedy token ids for a fixed prompt
   (the same prompt ids for both engines) with wgmtp's, reporting the first divergence and the
   top-2 logit margin there (llama.cpp quantizes activations, so near-ties may flip).

Rerun on a fresh machine (about 30-60 minutes the first time on 2 cores, mostly the build):

    python tools/bench_llamacpp.py                 # few-hundred-MB models, full table
    python tools/bench_llamacpp.py --small         # quick run on ~40 MB models
    python tools/bench_llamacpp.py --llama-bench /path/to/llama-bench   # skip the build
    python tools/bench_llamacpp.py --json out.json # also save every raw row

Options worth knowing: --vk-device (which Vulkan device llama.cpp uses; default: the first
non-CPU device, else lavapipe), --device (wgmtp's adapter), --repack (llama.cpp CPU repacking;
off by default: on some AVX-512 machines the repack path dies with SIGILL), --skip-build-deps,
--lcp-version (llama-cpp-python version; default pinned below).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
LCP_VERSION = "0.3.36"          # llama-cpp-python sdist; vendors llama.cpp 0c1e570 (2026-10-01)
PATCH_MARK = "/* wgmtp: guard VK_EXT_layer_settings for pre-1.3.261 Vulkan headers */"
TARGETS = ["llama-bench", "llama-completion"]
APT_PACKAGES = {"cmake": "cmake", "c++": "g++", "glslc": "glslc"}
PROMPT_IDS = None               # filled from the tokenizer of each model (see check_tokens)
PROMPT_TEXT = "The quick brown fox jumps over the lazy dog. A model reads every weight once per token,"


def log(msg: str) -> None:
    print(f"[bench_llamacpp] {msg}", file=sys.stderr, flush=True)


def nice_prefix() -> list[str]:
    return ["nice", "-n", "10"] if shutil.which("nice") else []


def run(cmd: list[str], env: dict | None = None, cwd: Path | None = None, check: bool = True,
        capture: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    log("$ " + " ".join(str(c) for c in cmd))
    p = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, text=True, timeout=timeout,
                       stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None)
    if check and p.returncode != 0:
        tail = ((p.stdout or "") + (p.stderr or ""))[-4000:]
        raise RuntimeError(f"command failed (rc {p.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return p


# --------------------------------------------------------------------------------------------
# 1. build

def ensure_build_deps(skip: bool) -> list[str]:
    """apt-get install what the build needs; returns the packages installed."""
    missing = []
    for exe, pkg in APT_PACKAGES.items():
        if not shutil.which(exe):
            missing.append(pkg)
    if not Path("/usr/include/vulkan/vulkan.h").exists() and not os.environ.get("VULKAN_SDK"):
        missing.append("libvulkan-dev")
    if not list(Path("/usr/share/vulkan/icd.d").glob("lvp_icd*.json")) and not _has_gpu_icd():
        missing.append("mesa-vulkan-drivers")
    if not missing:
        return []
    if skip:
        raise RuntimeError(f"missing build dependencies: {' '.join(missing)} (--skip-build-deps given)")
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"missing build dependencies: {' '.join(missing)}; install them "
                           f"(Debian/Ubuntu: apt-get install {' '.join(missing)})")
    log(f"installing with apt-get: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update"], env=env, check=False)
    run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env)
    return missing


def _has_gpu_icd() -> bool:
    d = Path("/usr/share/vulkan/icd.d")
    return d.exists() and any(p.name != "lvp_icd.x86_64.json" for p in d.glob("*.json"))


def fetch_sources(cache: Path, version: str) -> tuple[Path, str]:
    """Download and unpack the llama-cpp-python sdist; returns (llama.cpp source dir, version)."""
    dl = cache / "sdist"
    dl.mkdir(parents=True, exist_ok=True)
    have = sorted(dl.glob("llama_cpp_python-*.tar.gz"))
    want = None if version == "latest" else f"llama_cpp_python-{version}.tar.gz"
    tgz = next((p for p in have if want and p.name == want), None)
    if tgz is None:
        spec = "llama-cpp-python" if version == "latest" else f"llama-cpp-python=={version}"
        run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             "--no-build-isolation" if False else "--quiet", spec, "-d", str(dl)], capture=False)
        have = sorted(dl.glob("llama_cpp_python-*.tar.gz"), key=lambda p: p.stat().st_mtime)
        tgz = have[-1] if want is None else dl / want
    ver = re.match(r"llama_cpp_python-(.+)\.tar\.gz", tgz.name).group(1)
    src_root = cache / f"llama_cpp_python-{ver}"
    src = src_root / "vendor" / "llama.cpp"
    if not (src / "CMakeLists.txt").exists():
        log(f"unpacking {tgz.name}")
        with tarfile.open(tgz) as tf:
            tf.extractall(cache, filter="data") if sys.version_info >= (3, 12) else tf.extractall(cache)
    return src, ver


def patch_sources(src: Path) -> list[str]:
    """Guard llama.cpp's VK_EXT_layer_settings use (validation-layer configuration only) so the
    Vulkan backend compiles against Vulkan headers older than 1.3.261 (Debian 12: 1.3.239)."""
    f = src / "ggml" / "src" / "ggml-vulkan" / "ggml-vulkan.cpp"
    text = f.read_text()
    if PATCH_MARK in text:
        return ["VK_EXT_layer_settings guard (already applied)"]
    start = text.find("    VkBool32 enable_best_practice = layer_settings;\n")
    create = "vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions, &layer_setting_info);\n"
    end = text.find(create, start)
    if start < 0 or end < 0:
        if "LayerSettingsCreateInfoEXT" in text:
            raise RuntimeError("llama.cpp's Vulkan instance setup changed; update patch_sources()")
        return []
    end += len(create)
    block = text[start:end]
    plain = create.replace(", &layer_setting_info", "")
    new = (f"{PATCH_MARK}\n#ifdef VK_EXT_layer_settings\n{block}#else\n    {plain}#endif\n")
    f.write_text(text[:start] + new + text[end:])
    return ["VK_EXT_layer_settings guard"]


def build(cache_root: Path, version: str, jobs: int, skip_deps: bool) -> dict:
    cache_root.mkdir(parents=True, exist_ok=True)
    pinned = cache_root / f"llamacpp-{version}"
    info_file = pinned / "build-info.json"
    if version != "latest" and info_file.exists():
        info = json.loads(info_file.read_text())
        if all(Path(info["bin"], t).exists() for t in TARGETS) and Path(info.get("greedy", "/nonexistent")).exists():
            info["reused"] = True
            log(f"reusing llama.cpp build in {pinned}")
            return info
    installed = ensure_build_deps(skip_deps)
    t0 = time.time()
    tmp_src, ver = fetch_sources(cache_root / "downloads", version)
    t_dl = time.time() - t0
    cache = cache_root / f"llamacpp-{ver}"
    cache.mkdir(parents=True, exist_ok=True)
    info_file = cache / "build-info.json"
    if info_file.exists():
        info = json.loads(info_file.read_text())
        if all(Path(info["bin"], t).exists() for t in TARGETS) and Path(info.get("greedy", "/nonexistent")).exists():
            info["reused"] = True
            return info
    src = tmp_src
    patches = patch_sources(src)
    bdir = cache / "build"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    t1 = time.time()
    run(nice_prefix() + ["cmake", "-S", src, "-B", bdir, *gen, "-DCMAKE_BUILD_TYPE=Release",
                         "-DGGML_VULKAN=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF",
                         "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF",
                         "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DGGML_NATIVE=ON",
                         "-DGGML_CCACHE=OFF"], capture=False)
    run(nice_prefix() + ["cmake", "--build", bdir, "-j", str(jobs), "--target", *TARGETS], capture=False)
    bin_dir = bdir / "bin"
    greedy = compile_greedy(src, bin_dir)
    t_build = time.time() - t1
    commit = _vendored_commit(src)
    info = {"llama_cpp_python": ver, "llama_cpp_commit": commit, "src": str(src), "bin": str(bin_dir),
            "greedy": str(greedy), "patches": patches, "apt_installed": installed,
            "download_s": round(t_dl, 1), "build_s": round(t_build, 1), "jobs": jobs,
            "built_at": time.strftime("%Y-%m-%d %H:%M:%S"), "reused": False}
    info_file.write_text(json.dumps(info, indent=2))
    return info


def _vendored_commit(src: Path) -> str | None:
    """llama.cpp's build number/commit as its CMake records it (build-info), if present."""
    for cand in (src / ".." / ".." / "vendor" / "llama.cpp" / ".git",):
        pass
    try:
        p = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], text=True,
                           capture_output=True)
        if p.returncode == 0 and p.stdout.strip():
            return p.stdout.strip()
    except OSError:
        pass
    return None


def compile_greedy(src: Path, bin_dir: Path) -> Path:
    """tools/llamacpp/greedy.cpp against the libllama just built."""
    out = bin_dir / "wgmtp-greedy"
    cxx = shutil.which("c++") or shutil.which("g++")
    run(nice_prefix() + [cxx, "-O2", "-std=c++17", str(TOOLS / "llamacpp" / "greedy.cpp"),
                         "-I", str(src / "include"), "-I", str(src / "ggml" / "include"),
                         "-L", str(bin_dir), "-lllama", "-lggml", "-lggml-base",
                         f"-Wl,-rpath,{bin_dir}", "-o", str(out)])
    return out
