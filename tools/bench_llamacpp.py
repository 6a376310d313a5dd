#!/usr/bin/env python3
"""wgmtp next to llama.cpp: the same GGUF files, the same adapter, one run, one table.

Rerun on a fresh machine (Debian/Ubuntu, as root for apt-get; wgmtp installed in the Python
that runs this). The first run builds llama.cpp: about 15 min on 2 cores, then it is cached.

    python tools/bench_llamacpp.py                 # 122-203 MB models, full table + checks
    python tools/bench_llamacpp.py --small         # quick run on 17-28 MB models (~2-3 min)
    python tools/bench_llamacpp.py --llama-bench /path/to/llama-bench   # skip the build
    python tools/bench_llamacpp.py --json out.json # also save every raw number
    python tools/bench_llamacpp.py --build-only    # just build (or find) llama.cpp

What it does, in order:

1. Builds llama.cpp (Vulkan + CPU backends; `llama-bench`, `llama-completion`,
   `llama-speculative-simple`) from the `llama-cpp-python` source distribution on PyPI (its sdist
   vendors llama.cpp's sources), into ~/.cache/wgmtp/llamacpp-<version>/, reusing a previous
   build. Debian 12's Vulkan headers (1.3.239) lack VK_EXT_layer_settings, which llama.cpp uses
   only to configure validation layers: the script guards that block with
   `#ifdef VK_EXT_layer_settings` in the unpacked sources (a no-op with newer headers).
   Missing build tools are installed with apt-get (cmake, g++, glslc, libvulkan-dev,
   spirv-headers, mesa-vulkan-drivers). A small helper, tools/llamacpp/greedy.cpp, is compiled
   against the same libllama to get llama.cpp's greedy token ids, logit margins and tokenization.
2. Writes (or reuses) synthetic qwen35 GGUFs with tools/make_model.py, MTP block included, in
   Q8_0 and Q4_K_M (every matrix dim a multiple of 256, so K-quants apply everywhere); cached
   in ~/.cache/wgmtp/bench-models/<hash of make_model.py>/.
3. Runs `llama-bench -p P -n N -ngl 99 -r R -o json --repack 0` on the Vulkan device matching
   the adapter (on a CPU-only machine, lavapipe: llama.cpp hides CPU-type Vulkan devices unless
   GGML_VK_VISIBLE_DEVICES names them), llama.cpp's own CPU backend for scale (no Vulkan device
   visible, `-ngl 0 -dev none`), and `wgmtp bench -p P -n N --spec-draft-n-max 0 --reps R --json`
   on the same files (skipped with a message if `wgmtp bench` is missing), then prints a
   markdown table; ratio = wgmtp / llama.cpp Vulkan.
4. Checks, for each file: llama.cpp loads it (MTP block included, `load_mtp`) and reports any
   warning; llama.cpp's tokenization of a fixed prompt equals wgmtp's; greedy token ids of both
   engines for the same prompt ids agree, else the first divergence and the top-2 logit margin
   there (llama.cpp quantizes activations, so near-ties may flip). Then, on a small
   "predictable" model (make_model's mtp_copy), llama.cpp's own MTP speculative decoding
   (`llama-speculative-simple --spec-type draft-mtp`, CPU and Vulkan) next to wgmtp's:
   drafted/accepted counts and plain greedy ids.

Options worth knowing: --vk-device (GGML_VK_VISIBLE_DEVICES for llama.cpp; default: llama.cpp's
own GPU choice, else lavapipe), --device (wgmtp's adapter; default: the one matching llama.cpp's
device name), --repack 1 (llama.cpp CPU weight repacking; off by default because on some AVX-512
machines the repack path dies with SIGILL), --skip-cpu, --skip-check, --skip-mtp-check,
--skip-build-deps, --lcp-version (llama-cpp-python version; default pinned below).
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
PATCH_MARK = "/* wgmtp: guard VK_EXT_layer_settings (Vulkan headers without it, e.g. Debian 12's 1.3.239) */"
TARGETS = ["llama-bench", "llama-completion", "llama-speculative-simple", "llama-quantize"]
APT_PACKAGES = {"cmake": "cmake", "c++": "g++", "glslc": "glslc"}
TEXT = dict(encoding="utf-8", errors="replace")     # generated text may hold partial UTF-8
PROMPT_TEXT = "The quick brown fox jumps over the lazy dog. A model reads every weight once per token,"


def log(msg: str) -> None:
    print(f"[bench_llamacpp] {msg}", file=sys.stderr, flush=True)


def nice_prefix() -> list[str]:
    return ["nice", "-n", "10"] if shutil.which("nice") else []


def run(cmd: list, env: dict | None = None, cwd: Path | None = None, check: bool = True,
        capture: bool = True, timeout: float | None = None, logfile: Path | None = None
        ) -> subprocess.CompletedProcess:
    """Run a command; with `logfile`, its output is appended there (the tail is shown on failure)."""
    log("$ " + " ".join(str(c) for c in cmd) + (f"   (output: {logfile})" if logfile else ""))
    if logfile:
        with open(logfile, "a") as fh:
            fh.write("$ " + " ".join(str(c) for c in cmd) + "\n")
            fh.flush()
            p = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, timeout=timeout, **TEXT,
                               stdout=fh, stderr=subprocess.STDOUT)
        out = Path(logfile).read_text()[-4000:]
    else:
        p = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, timeout=timeout, **TEXT,
                           stdout=subprocess.PIPE if capture else sys.stderr,
                           stderr=subprocess.PIPE if capture else sys.stderr)
        out = ((p.stdout or "") + (p.stderr or ""))[-4000:]
    if check and p.returncode != 0:
        raise RuntimeError(f"command failed (rc {p.returncode}): {' '.join(map(str, cmd))}\n{out}")
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
    if not any(Path(d, "SPIRV-Headers").exists() for d in ("/usr/share/cmake", "/usr/lib/cmake",
                                                           "/usr/local/share/cmake")):
        missing.append("spirv-headers")     # llama.cpp: find_package(SPIRV-Headers CONFIG REQUIRED)
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


def fetch_sources(cache_root: Path, version: str) -> tuple[Path, str]:
    """Download the llama-cpp-python sdist (pip, from PyPI) and unpack it into
    cache_root/llamacpp-<version>/; returns (llama.cpp source dir, version)."""
    dl = cache_root / "sdist"
    dl.mkdir(parents=True, exist_ok=True)
    want = None if version == "latest" else f"llama_cpp_python-{version}.tar.gz"
    tgz = dl / want if want and (dl / want).exists() else None
    if tgz is None:
        spec = "llama-cpp-python" if version == "latest" else f"llama-cpp-python=={version}"
        before = set(dl.glob("llama_cpp_python-*.tar.gz"))
        run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", spec,
             "-d", str(dl)], capture=False)    # pip builds the sdist's metadata: about a minute
        if want:
            tgz = dl / want
        else:
            new = set(dl.glob("llama_cpp_python-*.tar.gz")) - before
            tgz = max(new or dl.glob("llama_cpp_python-*.tar.gz"), key=lambda p: p.stat().st_mtime)
    ver = re.match(r"llama_cpp_python-(.+)\.tar\.gz", tgz.name).group(1)
    dest = cache_root / f"llamacpp-{ver}"
    src = dest / f"llama_cpp_python-{ver}" / "vendor" / "llama.cpp"
    if not (src / "CMakeLists.txt").exists():
        log(f"unpacking {tgz.name}")
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tgz) as tf:
            if sys.version_info >= (3, 12):
                tf.extractall(dest, filter="data")
            else:
                tf.extractall(dest)
    return src, ver


def patch_sources(src: Path) -> list[str]:
    """Guard llama.cpp's VK_EXT_layer_settings use (validation-layer configuration only) so the
    Vulkan backend compiles against Vulkan headers that lack it (Debian 12: 1.3.239). With newer
    headers the guard changes nothing."""
    f = src / "ggml" / "src" / "ggml-vulkan" / "ggml-vulkan.cpp"
    text = f.read_text()
    if PATCH_MARK in text or "#ifdef VK_EXT_layer_settings" in text:
        return ["VK_EXT_layer_settings guard (already applied)"]
    start = text.find("    VkBool32 enable_best_practice = layer_settings;\n")
    create = ("vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions, "
              "&layer_setting_info);\n")
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


GREEDY_SRC = TOOLS / "llamacpp" / "greedy.cpp"


def _complete(info_file: Path) -> dict | None:
    """The recorded build, if every target is there (the greedy helper is recompiled when
    tools/llamacpp/greedy.cpp is newer than it)."""
    if not info_file.exists():
        return None
    info = json.loads(info_file.read_text())
    if not all(Path(info["bin"], t).exists() for t in TARGETS):
        return None
    g = Path(info.get("greedy") or Path(info["bin"], "wgmtp-greedy"))
    if not g.exists() or g.stat().st_mtime < GREEDY_SRC.stat().st_mtime:
        info["greedy"] = str(compile_greedy(Path(info["src"]), Path(info["bin"])))
        info_file.write_text(json.dumps(info, indent=2))
    return info


def build(cache_root: Path, version: str, jobs: int, skip_deps: bool) -> dict:
    """Build (or reuse) llama.cpp's Vulkan tools in cache_root/llamacpp-<version>/build/bin."""
    if version != "latest":
        info = _complete(cache_root / f"llamacpp-{version}" / "build-info.json")
        if info:
            log(f"reusing the llama.cpp build in {cache_root / f'llamacpp-{version}'} "
                f"(built {info['built_at']} in {info['build_s']:.0f} s)")
            return dict(info, reused=True)
    installed = ensure_build_deps(skip_deps)
    t0 = time.time()
    src, ver = fetch_sources(cache_root, version)
    t_dl = time.time() - t0
    cache = cache_root / f"llamacpp-{ver}"
    info_file = cache / "build-info.json"
    info = _complete(info_file)
    if info:
        return dict(info, reused=True)
    old = json.loads(info_file.read_text()) if info_file.exists() else {}
    patches = patch_sources(src)
    bdir = cache / "build"
    blog = cache / "build.log"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    t1 = time.time()
    log(f"building llama.cpp (Vulkan + CPU backends, {', '.join(TARGETS)}) with {jobs} jobs"
        + ("" if old else "; about 15-30 min on 2 cores"))
    run(nice_prefix() + ["cmake", "-S", src, "-B", bdir, *gen, "-DCMAKE_BUILD_TYPE=Release",
                         "-DGGML_VULKAN=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF",
                         "-DLLAMA_BUILD_EXAMPLES=ON", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF",
                         "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DGGML_NATIVE=ON",
                         "-DGGML_CCACHE=OFF"], logfile=blog)
    run(nice_prefix() + ["cmake", "--build", bdir, "-j", str(jobs), "--target", *TARGETS], logfile=blog)
    bin_dir = bdir / "bin"
    greedy = compile_greedy(src, bin_dir)
    t_build = time.time() - t1
    info = {"llama_cpp_python": ver, "llama_cpp_commit": _vendored_commit(src), "src": str(src),
            "bin": str(bin_dir), "greedy": str(greedy), "patches": old.get("patches") or patches,
            "apt_installed": sorted(set(old.get("apt_installed", [])) | set(installed)),
            "download_s": old.get("download_s", round(t_dl, 1)),
            "build_s": round(t_build + old.get("build_s", 0.0), 1), "jobs": jobs,
            "cpu": _cpu_name(), "built_at": time.strftime("%Y-%m-%d %H:%M:%S"), "reused": False}
    info_file.write_text(json.dumps(info, indent=2))
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _vendored_commit(src: Path) -> str | None:
    """The llama.cpp commit the sdist vendors, from llama-cpp-python's CHANGELOG (newest entry)."""
    f = src.parent.parent / "CHANGELOG.md"
    if f.exists():
        m = re.search(r"llama\.cpp@([0-9a-f]{7,40})", f.read_text())
        if m:
            return m.group(1)
    return None


def compile_greedy(src: Path, bin_dir: Path) -> Path:
    """tools/llamacpp/greedy.cpp against the libllama just built."""
    out = bin_dir / "wgmtp-greedy"
    cxx = shutil.which("c++") or shutil.which("g++")
    run(nice_prefix() + [cxx, "-O2", "-std=c++17", str(GREEDY_SRC),
                         "-I", str(src / "include"), "-I", str(src / "ggml" / "include"),
                         "-L", str(bin_dir), "-lllama", "-lggml", "-lggml-base",
                         f"-Wl,-rpath,{bin_dir}", "-o", str(out)])
    return out



def find_greedy(llama_bench: Path, cache_root: Path, llama_src: Path | None) -> Path | None:
    """The greedy helper beside a given llama-bench, or compiled against it (needs llama.h)."""
    bin_dir = llama_bench.resolve().parent
    cand = bin_dir / "wgmtp-greedy"
    if cand.exists():
        return cand
    srcs = [llama_src] if llama_src else [bin_dir.parent.parent, bin_dir.parent]
    for src in srcs:
        if src and (Path(src) / "include" / "llama.h").exists():
            libdir = next((d for d in (bin_dir, bin_dir.parent / "lib", bin_dir.parent / "src")
                           if list(d.glob("libllama.*"))), bin_dir)
            out = cache_root / "wgmtp-greedy-custom"
            cache_root.mkdir(parents=True, exist_ok=True)
            cxx = shutil.which("c++") or shutil.which("g++")
            try:
                run([cxx, "-O2", "-std=c++17", str(TOOLS / "llamacpp" / "greedy.cpp"),
                     "-I", str(Path(src) / "include"), "-I", str(Path(src) / "ggml" / "include"),
                     "-L", str(libdir), "-lllama", "-lggml", "-lggml-base",
                     f"-Wl,-rpath,{libdir}", "-o", str(out)])
                return out
            except (RuntimeError, TypeError) as e:
                log(f"could not compile the greedy helper: {e}")
    return None


# --------------------------------------------------------------------------------------------
# 2. models

SIZES = {
    # 203 MB in Q8_0 / 122 MB in Q4_K_M (with MTP); every matrix dim a multiple of 256
    "default": dict(embd=1024, ff=3072, heads=8, kv_heads=2, head_dim=128, gdn_k_heads=4,
                    gdn_v_heads=8, gdn_dim=128, layers=8, vocab=32768),
    # 28 MB / 17 MB
    "small": dict(embd=512, ff=1536, heads=4, kv_heads=2, head_dim=128, gdn_k_heads=2,
                  gdn_v_heads=4, gdn_dim=128, layers=4, vocab=8192),
}


def make_models(cache_root: Path, size: str, types: list[str], mtp: bool) -> list[Path]:
    """Synthetic qwen35 files from tools/make_model.py, cached per make_model.py version."""
    import hashlib
    mm = TOOLS / "make_model.py"
    tag = hashlib.sha1(mm.read_bytes()).hexdigest()[:10]
    d = SIZES[size]
    out_dir = cache_root / "bench-models" / tag
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in (cache_root / "bench-models").iterdir():     # files from older make_model.py versions
        if old.is_dir() and old.name != tag:
            shutil.rmtree(old, ignore_errors=True)
    paths = []
    for t in types:
        name = (f"qwen35-synth-e{d['embd']}-f{d['ff']}-l{d['layers']}-v{d['vocab']}-{t.lower()}"
                f"{'-mtp' if mtp else ''}.gguf")
        path = out_dir / name
        if not path.exists():
            args = []
            for k, v in d.items():
                args += [f"--{k.replace('_', '-')}", str(v)]
            tmp = path.with_suffix(".tmp.gguf")
            run(nice_prefix() + [sys.executable, str(mm), str(tmp), *args, "--type", t,
                                 "--mtp" if mtp else "--no-mtp"])
            tmp.rename(path)
        else:
            log(f"reusing {path}")
        paths.append(path)
    return paths


PREDICTABLE = dict(block_out_scale=0.2, mtp_copy=True, seed=3)    # as in tests/test_gpu_spec.py


def make_predictable_model(cache_root: Path) -> Path:
    """A small Q8_0 file whose MTP head predicts the trunk often (make_model's block_out_scale +
    mtp_copy): random heads accept ~0 drafts, which would check nothing about the MTP block."""
    import hashlib
    mm = TOOLS / "make_model.py"
    tag = hashlib.sha1(mm.read_bytes()).hexdigest()[:10]
    d = SIZES["small"]
    spec = dict(n_embd=d["embd"], n_ff=d["ff"], n_head=d["heads"], n_head_kv=d["kv_heads"],
                head_dim=d["head_dim"], ssm_n_group=d["gdn_k_heads"], ssm_dt_rank=d["gdn_v_heads"],
                ssm_d_state=d["gdn_dim"], n_layer=d["layers"], n_vocab=d["vocab"], wtype="Q8_0",
                mtp=True, **PREDICTABLE)
    path = cache_root / "bench-models" / tag / f"qwen35-predictable-e{d['embd']}-l{d['layers']}-q8_0-mtp.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.gguf")
        code = (f"import sys; sys.path.insert(0, {str(TOOLS)!r}); from make_model import make_model; "
                f"make_model({str(tmp)!r}, **{spec!r})")
        run(nice_prefix() + [sys.executable, "-c", code])
        tmp.rename(path)
    return path


# --------------------------------------------------------------------------------------------
# 3. running llama.cpp

def _env(vk: str | None, cpu_only: bool = False) -> dict:
    env = dict(os.environ)
    env.pop("GGML_VK_VISIBLE_DEVICES", None)
    if vk is not None and not cpu_only:
        env["GGML_VK_VISIBLE_DEVICES"] = vk
    return env


def list_devices(llama_bench: Path, vk: str | None) -> list[str]:
    p = subprocess.run([str(llama_bench), "--list-devices"], env=_env(vk), capture_output=True,
                       timeout=120, **TEXT)
    if p.returncode != 0:
        return []
    return [re.sub(r"\s*\(\d+ MiB, \d+ MiB free\)\s*$", "", ln.strip())
            for ln in (p.stdout + p.stderr).splitlines() if re.match(r"\s*Vulkan\d+:", ln)]


def pick_vk_device(llama_bench: Path, want: str) -> tuple[str | None, str]:
    """(value for GGML_VK_VISIBLE_DEVICES or None for llama.cpp's default, device description)."""
    if want != "auto":
        devs = list_devices(llama_bench, want)
        if not devs:
            raise RuntimeError(f"llama.cpp sees no Vulkan device with GGML_VK_VISIBLE_DEVICES={want}")
        return want, devs[0].split(":", 1)[1].strip()
    devs = list_devices(llama_bench, None)
    if devs:                     # a GPU: llama.cpp's own choice
        return None, devs[0].split(":", 1)[1].strip()
    for i in range(16):          # none: find lavapipe (hidden by default as a CPU-type device)
        devs = list_devices(llama_bench, str(i))
        if not devs:
            break
        if "llvmpipe" in devs[0].lower() or "lavapipe" in devs[0].lower():
            return str(i), devs[0].split(":", 1)[1].strip()
    raise RuntimeError("llama.cpp found no Vulkan device (not even lavapipe: is mesa-vulkan-drivers installed?)")


def _errors(text: str) -> list[str]:
    keep = []
    for ln in text.splitlines():
        if re.search(r"error|failed|invalid|missing|unknown|wrong|exception|abort|assert", ln, re.I):
            keep.append(ln.strip())
    return keep[:20]


def llama_bench_rows(llama_bench: Path, model: Path, backend: str, vk: str | None, a) -> tuple[list[dict], dict]:
    """Run llama-bench once (pp and tg); returns (rows, diagnostics)."""
    cmd = [str(llama_bench), "-m", str(model), "-p", str(a.n_prompt), "-n", str(a.n_gen),
           "-r", str(a.reps), "-o", "json", "--repack", str(a.repack)]
    if backend == "vulkan":
        cmd += ["-ngl", "99"]
    else:
        cmd += ["-ngl", "0", "-dev", "none"]
    if a.threads:
        cmd += ["-t", str(a.threads)]
    env = _env(vk, cpu_only=backend == "cpu")
    if backend == "cpu":
        env["GGML_VK_VISIBLE_DEVICES"] = ""      # no Vulkan device at all (no op offload either)
    shown = (f"GGML_VK_VISIBLE_DEVICES={vk} " if backend == "vulkan" and vk is not None else
             "GGML_VK_VISIBLE_DEVICES= " if backend == "cpu" else "") + \
        " ".join(["llama-bench"] + cmd[1:])
    log(f"$ {shown}")
    t0 = time.time()
    p = subprocess.run(nice_prefix() + cmd, env=env, capture_output=True, timeout=a.timeout, **TEXT)
    diag = {"cmd": shown, "rc": p.returncode, "wall_s": round(time.time() - t0, 1),
            "errors": _errors(p.stderr), "stderr_tail": p.stderr[-3000:]}
    rows = []
    if p.returncode == 0:
        try:
            data = json.loads(p.stdout[p.stdout.index("["):])
        except ValueError as e:
            diag["errors"].append(f"could not parse llama-bench JSON: {e}")
            data = []
        for r in data:
            test = f"pp{r['n_prompt']}" if r.get("n_prompt") else f"tg{r['n_gen']}"
            rows.append({"engine": f"llama.cpp {backend}", "model": str(model), "test": test,
                         "tok_s": r.get("avg_ts"), "tok_s_std": r.get("stddev_ts"),
                         "adapter": (r.get("gpu_info") or r.get("cpu_info")) if backend == "vulkan"
                         else f"{r.get('cpu_info')} ({r.get('n_threads')} threads)",
                         "model_type": r.get("model_type"), "model_size": r.get("model_size"),
                         "backends": r.get("backends"), "build_commit": r.get("build_commit"),
                         "n_threads": r.get("n_threads"), "raw": r})
    return rows, diag


def llama_greedy(greedy: Path, model: Path, backend: str, vk: str | None, ids: list[int], n: int,
                 a) -> dict:
    cmd = [str(greedy), str(model), "99" if backend == "vulkan" else "0", str(a.repack), str(n),
           str(a.threads or 0), ",".join(map(str, ids)), PROMPT_TEXT]
    env = _env(vk, cpu_only=backend == "cpu")
    if backend == "cpu":
        env["GGML_VK_VISIBLE_DEVICES"] = ""      # no Vulkan device at all
    log("$ " + " ".join(cmd[:6]) + " <prompt ids>")
    p = subprocess.run(nice_prefix() + cmd, env=env, capture_output=True, timeout=a.timeout, **TEXT)
    if p.returncode != 0:
        return {"ok": False, "rc": p.returncode, "errors": _errors(p.stderr) or [p.stderr[-2000:]]}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["ok"] = True
    out["warnings"] = [ln for ln in p.stderr.splitlines() if ln.strip()][:20]
    return out


def llama_completion(bin_dir: Path, model: Path, vk: str | None, a) -> dict:
    exe = bin_dir / "llama-completion"
    if not exe.exists():
        return {"ok": False, "errors": ["llama-completion not built"]}
    cmd = [str(exe), "-m", str(model), "-p", PROMPT_TEXT, "-n", "16", "--temp", "0", "-ngl", "99",
           "-c", "512", "-no-cnv", "--no-warmup"] + ([] if a.repack else ["--no-repack"])
    log("$ " + " ".join(cmd))
    p = subprocess.run(nice_prefix() + cmd, env=_env(vk), capture_output=True,
                       timeout=a.timeout, stdin=subprocess.DEVNULL, **TEXT)
    return {"ok": p.returncode == 0, "rc": p.returncode, "text": p.stdout[-1000:],
            "errors": _errors(p.stderr) if p.returncode else []}


def llama_spec(bin_dir: Path, model: Path, backend: str, vk: str | None, n_max: int, a) -> dict:
    """llama.cpp's own MTP speculative decoding (llama-speculative-simple --spec-type draft-mtp)."""
    exe = bin_dir / "llama-speculative-simple"
    if not exe.exists():
        return {"ok": False, "errors": ["llama-speculative-simple not built"]}
    cmd = [str(exe), "-m", str(model), "-p", PROMPT_TEXT, "-n", str(a.check_tokens), "--temp", "0",
           "-c", "512", "--spec-type", "draft-mtp", "--spec-draft-n-max", str(n_max),
           "--spec-draft-p-min", "0", "-ngl", "99" if backend == "vulkan" else "0"] + \
        ([] if a.repack else ["--no-repack"])
    env = _env(vk, cpu_only=backend == "cpu")
    if backend == "cpu":
        env["GGML_VK_VISIBLE_DEVICES"] = ""
    shown = (f"GGML_VK_VISIBLE_DEVICES={'' if backend == 'cpu' else vk} ") + " ".join(
        ["llama-speculative-simple"] + [c if " " not in c else repr(c) for c in cmd[1:]])
    log(f"$ {shown}")
    for _ in range(2):     # its async logger can lose the closing stats lines under load: retry once
        p = subprocess.run(nice_prefix() + cmd, env=env, capture_output=True, timeout=a.timeout,
                           stdin=subprocess.DEVNULL, **TEXT)
        if p.returncode != 0 or re.search(r"n_drafted\s*=", p.stdout + p.stderr):
            break
    res = {"ok": p.returncode == 0, "rc": p.returncode, "cmd": shown}
    if p.returncode != 0:
        sig = {-11: "SIGSEGV", -6: "SIGABRT", -4: "SIGILL", 139: "SIGSEGV", 134: "SIGABRT"}.get(p.returncode)
        res["errors"] = ([f"crashed ({sig})"] if sig else []) + _errors(p.stderr)
        return res
    for key in ("n_drafted", "n_accept", "n_predict"):
        m = re.search(rf"{key}\s*=\s*(\d+)", p.stderr + p.stdout)
        res[key] = int(m.group(1)) if m else None
    m = re.search(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds", p.stderr + p.stdout)
    if m:
        res["tg_tok_s"] = int(m.group(1)) / max(1e-9, float(m.group(2)))
    res["acceptance"] = (res["n_accept"] / res["n_drafted"]) if res.get("n_drafted") else None
    res["text"] = p.stdout.strip()[-500:]
    if res["n_drafted"] is None:
        res["errors"] = ["no n_drafted/n_accept lines in its log (twice)"]
    return res


# --------------------------------------------------------------------------------------------
# wgmtp

def wgmtp_available() -> str | None:
    p = subprocess.run([sys.executable, "-m", "wgmtp.cli", "bench", "--help"], text=True,
                       capture_output=True, cwd=ROOT)
    return None if p.returncode == 0 else (p.stderr.strip().splitlines() or ["wgmtp bench not found"])[-1]


def wgmtp_rows(model: Path, device: str | None, a) -> tuple[list[dict], dict]:
    cmd = [sys.executable, "-m", "wgmtp.cli", "bench", "-m", str(model), "-p", str(a.n_prompt),
           "-n", str(a.n_gen), "--spec-draft-n-max", "0", "--reps", str(a.reps), "--json"]
    if device:
        cmd += ["--device", device]
    shown = " ".join(["wgmtp"] + cmd[3:])
    log(f"$ {shown}")
    t0 = time.time()
    p = subprocess.run(nice_prefix() + cmd, capture_output=True, timeout=a.timeout, cwd=ROOT, **TEXT)
    diag = {"cmd": shown, "rc": p.returncode, "wall_s": round(time.time() - t0, 1),
            "errors": _errors(p.stderr) if p.returncode else [], "stderr_tail": p.stderr[-3000:]}
    rows = []
    if p.returncode == 0:
        try:
            rows = json.loads(p.stdout[p.stdout.index("["):])
        except ValueError as e:
            diag["errors"].append(f"could not parse wgmtp bench JSON: {e}")
    return rows, diag


_GREEDY_SNIPPET = r"""
import json, sys
import numpy as np
sys.path.insert(0, {root!r})
from wgmtp import api
m = api.load({model!r}, device={device!r}, n_ctx=512)
ids = {ids!r}
out = list(m.generate_ids(ids, max_tokens={n}, temperature=0.0))
lg = m.logits(ids + out[:-1]) if out else np.zeros((0, 1), np.float32)
rows = lg[len(ids) - 1:]
top2 = np.sort(rows, axis=1)[:, -2:] if rows.shape[1] > 1 else np.zeros((len(out), 2))
print(json.dumps({{"tokens": [int(t) for t in out], "margins": [float(x) for x in (top2[:, 1] - top2[:, 0])],
                  "argmax": [int(x) for x in rows.argmax(axis=1)], "adapter": m.device_name}}))
"""


_SPEC_SNIPPET = r"""
import json, sys
sys.path.insert(0, {root!r})
from wgmtp import api
m = api.load({model!r}, device={device!r}, n_ctx=512)
ids = m.tokenizer.encode({text!r})
plain = list(m.generate_ids(ids, max_tokens={n}, temperature=0.0))
spec = list(m.generate_ids(ids, max_tokens={n}, temperature=0.0, spec="draft-mtp", n_max={n_max}, p_min=0.0))
st = m.stats
print(json.dumps({{"prompt_ids": ids, "plain": plain, "spec": spec, "drafted": st["drafted"],
                  "accepted": st["accepted"], "rounds": st["verify_rounds"], "adapter": m.device_name}}))
"""


def wgmtp_spec(model: Path, device: str | None, n_max: int, a) -> dict:
    code = _SPEC_SNIPPET.format(root=str(ROOT), model=str(model), device=device or "auto",
                                text=PROMPT_TEXT, n=a.check_tokens, n_max=n_max)
    log(f"$ wgmtp MTP speculation (n_max {n_max}, Python API) on {model.name}")
    p = subprocess.run(nice_prefix() + [sys.executable, "-c", code], capture_output=True,
                       timeout=a.timeout, cwd=ROOT, **TEXT)
    if p.returncode != 0:
        return {"ok": False, "errors": _errors(p.stderr) or [p.stderr[-2000:]]}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["ok"] = True
    out["acceptance"] = out["accepted"] / out["drafted"] if out["drafted"] else None
    out["lossless"] = out["plain"] == out["spec"]
    return out


def mtp_check(bin_dir: Path, greedy: Path | None, vk: str | None, wdev: str | None, cache_root: Path,
              a) -> dict:
    """On a predictable model: llama.cpp's MTP speculation (CPU and Vulkan) next to wgmtp's, same
    prompt text, n_max 3, p_min 0; plus plain greedy ids of both engines."""
    model = make_predictable_model(cache_root)
    res = {"model": str(model), "n_max": 3}
    res["llama.cpp cpu"] = llama_spec(bin_dir, model, "cpu", None, 3, a)
    if not a.skip_vulkan_mtp:
        crashes = 0
        for _ in range(2):     # on lavapipe (Mesa 22.3) this run sometimes dies in the driver: retry once
            r = llama_spec(bin_dir, model, "vulkan", vk, 3, a)
            if r.get("ok") or not any("crashed" in e for e in r.get("errors", [])):
                break
            crashes += 1
        r["crashes"] = crashes
        if not r.get("ok") and crashes:
            r["errors"] = [f"crashed in {crashes} of {crashes} tries"] + r.get("errors", [])[1:]
        res["llama.cpp vulkan"] = r
    if not a.skip_wgmtp:
        res["wgmtp"] = wgmtp_spec(model, wdev, 3, a)
        w = res["wgmtp"]
        if w.get("ok") and greedy:
            for backend in ("cpu", "vulkan"):
                g = llama_greedy(greedy, model, backend, vk, w["prompt_ids"], a.check_tokens, a)
                res[f"greedy llama.cpp {backend}"] = g
                if g.get("ok"):
                    res[f"wgmtp vs llama.cpp {backend}"] = compare({"tokens": w["plain"]}, g, end_ids(model))
                    res["same_prompt_ids"] = g.get("text_ids") == w["prompt_ids"]
            gc, gv = res.get("greedy llama.cpp cpu", {}), res.get("greedy llama.cpp vulkan", {})
            if gc.get("ok") and gv.get("ok"):
                res["llama.cpp vulkan vs cpu"] = compare(gc, gv)
    return res


def wgmtp_greedy(model: Path, device: str | None, ids: list[int], n: int, a) -> dict:
    code = _GREEDY_SNIPPET.format(root=str(ROOT), model=str(model), device=device or "auto", ids=ids, n=n)
    log(f"$ wgmtp greedy ({n} tokens, Python API) on {model.name}")
    p = subprocess.run(nice_prefix() + [sys.executable, "-c", code], capture_output=True,
                       timeout=a.timeout, cwd=ROOT, **TEXT)
    if p.returncode != 0:
        return {"ok": False, "errors": _errors(p.stderr) or [p.stderr[-2000:]]}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["ok"] = True
    return out


def prompt_ids(model: Path) -> list[int]:
    sys.path.insert(0, str(ROOT))
    from wgmtp.models.qwen35 import GGUFModel
    from wgmtp.tokenizer import Tokenizer
    return [int(t) for t in Tokenizer.from_gguf(GGUFModel(str(model))).encode(PROMPT_TEXT)]


def end_ids(model: Path) -> set[int]:
    """The file's end-of-generation ids as wgmtp reads them (wgmtp stops after emitting one;
    llama.cpp's greedy helper does not stop)."""
    sys.path.insert(0, str(ROOT))
    from wgmtp.api import eog_ids
    from wgmtp.models.qwen35 import GGUFModel
    return eog_ids(GGUFModel(str(model)))


def compare(ref: dict, other: dict, eog: set[int] = frozenset()) -> dict:
    """First position where two greedy sequences differ, with both engines' top-2 margins there.
    A shorter sequence that ends in an end token (`eog`) and is a prefix of the other agrees: both
    emitted the end token there, and only one engine stops at it."""
    a_t, b_t = ref.get("tokens", []), other.get("tokens", [])
    n = min(len(a_t), len(b_t))
    first = next((i for i in range(n) if a_t[i] != b_t[i]), None)
    res = {"agree": first is None and len(a_t) == len(b_t), "compared": n, "first_divergence": first}
    if first is not None:
        res["margin_ref"] = ref.get("margins", [None] * (first + 1))[first]
        res["margin_other"] = other.get("margins", [None] * (first + 1))[first]
    elif len(a_t) != len(b_t) and n and (a_t if len(a_t) < len(b_t) else b_t)[-1] in eog:
        res["agree"] = True
        res["note"] = f"both emit the end token {a_t[n - 1]} at position {n - 1}; only one engine stops there"
    elif len(a_t) != len(b_t):
        res["note"] = f"lengths differ ({len(a_t)} vs {len(b_t)}) without an end token where the shorter stops"
    return res


# --------------------------------------------------------------------------------------------
# report

def _f(x, nd=2) -> str:
    return "-" if x is None else (f"{x:.{nd}f}" if x < 100 else f"{x:.1f}")


def table(results: list[dict], a) -> str:
    pp, tg = f"pp{a.n_prompt}", f"tg{a.n_gen}"
    lines = [f"| engine | adapter | weight type | {pp} tok/s | {tg} tok/s | ratio {pp} | ratio {tg} |",
             "|---|---|---|---:|---:|---:|---:|"]
    for res in results:
        by = {}
        for r in res["rows"]:
            by.setdefault(r["engine"], {})[r["test"]] = r
        vk = by.get("llama.cpp vulkan", {})
        for eng in ("wgmtp", "llama.cpp vulkan", "llama.cpp cpu"):
            if eng not in by and not (eng == "wgmtp" and res.get("wgmtp_skipped")):
                if eng in res.get("failed", {}):
                    lines.append(f"| {eng} | - | {res['wtype']} | failed | failed | | |")
                continue
            if eng not in by:
                lines.append(f"| {eng} | - | {res['wtype']} | skipped | skipped | | |")
                continue
            rows = by[eng]
            adapter = next((r.get("adapter") for r in rows.values() if r.get("adapter")), "-")
            if eng == "llama.cpp vulkan" and res.get("vk_name"):
                adapter = res["vk_name"]
            pp_v = rows.get(pp, {}).get("tok_s")
            tg_v = rows.get(tg, {}).get("tok_s")
            rp = rt = ""
            if eng == "wgmtp":
                if pp_v and vk.get(pp, {}).get("tok_s"):
                    rp = f"{pp_v / vk[pp]['tok_s']:.2f}"
                if tg_v and vk.get(tg, {}).get("tok_s"):
                    rt = f"{tg_v / vk[tg]['tok_s']:.2f}"
            lines.append(f"| {eng} | {adapter} | {res['wtype']} | {_f(pp_v)} | {_f(tg_v)} | {rp} | {rt} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    doc = __doc__.split("\n\n")[0]
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="quick run on 17-28 MB models (4 layers, hidden 512)")
    ap.add_argument("--types", default="Q8_0,Q4_K_M", help="weight types of the synthetic models")
    ap.add_argument("-m", "--model", action="append", default=None,
                    help="benchmark this GGUF instead of synthetic ones (repeatable)")
    ap.add_argument("--no-mtp", action="store_true", help="write the synthetic models without the MTP block")
    ap.add_argument("-p", "--n-prompt", type=int, default=64)
    ap.add_argument("-n", "--n-gen", type=int, default=16)
    ap.add_argument("-r", "--reps", type=int, default=1)
    ap.add_argument("-t", "--threads", type=int, default=None, help="llama.cpp CPU threads (default: its own)")
    ap.add_argument("--repack", type=int, choices=(0, 1), default=0,
                    help="llama.cpp CPU weight repacking (default 0: the repack path can die with SIGILL)")
    ap.add_argument("--llama-bench", default=None, help="use this llama-bench; skip the build")
    ap.add_argument("--llama-src", default=None, help="llama.cpp sources for the greedy helper (with --llama-bench)")
    ap.add_argument("--lcp-version", default=LCP_VERSION, help="llama-cpp-python sdist version ('latest' allowed)")
    ap.add_argument("--cache-dir",
                    default=str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wgmtp"))
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--skip-build-deps", action="store_true", help="never apt-get install")
    ap.add_argument("--vk-device", default="auto",
                    help="GGML_VK_VISIBLE_DEVICES index for llama.cpp (default: its GPU, else lavapipe)")
    ap.add_argument("--device", default=None,
                    help="wgmtp adapter (index or name substring; default: the one matching llama.cpp's)")
    ap.add_argument("--skip-cpu", action="store_true", help="skip llama.cpp's CPU backend")
    ap.add_argument("--skip-wgmtp", action="store_true")
    ap.add_argument("--skip-check", action="store_true", help="skip the greedy-token comparison")
    ap.add_argument("--check-tokens", type=int, default=16)
    ap.add_argument("--skip-mtp-check", action="store_true",
                    help="skip the MTP speculation comparison on a predictable model")
    ap.add_argument("--skip-vulkan-mtp", action="store_true",
                    help="run llama.cpp's MTP speculation on its CPU backend only")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per engine run")
    ap.add_argument("--json", default=None, metavar="OUT", help="save the raw results to this file")
    ap.add_argument("--build-only", action="store_true", help="build (or find) llama.cpp, print its info, stop")
    a = ap.parse_args(argv)
    cache_root = Path(a.cache_dir).expanduser()
    if a.build_only:
        print(json.dumps(build(cache_root, a.lcp_version, a.jobs, a.skip_build_deps), indent=2))
        return 0
    command = "python tools/bench_llamacpp.py " + " ".join(sys.argv[1:] if argv is None else argv)

    # 1. llama.cpp
    if a.llama_bench:
        llama_bench = Path(a.llama_bench).expanduser().resolve()
        info = {"llama_bench": str(llama_bench), "reused": True, "given": True}
        greedy = None if a.skip_check else find_greedy(llama_bench, cache_root,
                                                       Path(a.llama_src) if a.llama_src else None)
    else:
        info = build(cache_root, a.lcp_version, a.jobs, a.skip_build_deps)
        llama_bench = Path(info["bin"]) / "llama-bench"
        greedy = Path(info["greedy"])
    bin_dir = llama_bench.parent
    vk, vk_name = pick_vk_device(llama_bench, a.vk_device)
    log(f"llama.cpp Vulkan device: {vk_name}" + (f" (GGML_VK_VISIBLE_DEVICES={vk})" if vk is not None else ""))
    wdev = a.device
    if wdev is None:
        wdev = "llvmpipe" if "llvmpipe" in vk_name.lower() else vk_name.split("(")[0].strip() or None

    # 2. models
    models = [Path(m) for m in a.model] if a.model else make_models(
        cache_root, "small" if a.small else "default", [t.strip() for t in a.types.split(",") if t.strip()],
        mtp=not a.no_mtp)

    # wgmtp available?
    why_not = None if a.skip_wgmtp else wgmtp_available()
    if why_not:
        log(f"skipping wgmtp: `wgmtp bench` is not available ({why_not})")

    results = []
    for model in models:
        res = {"model": str(model), "size_bytes": model.stat().st_size, "rows": [], "diag": {}, "failed": {},
               "vk_name": vk_name, "wgmtp_skipped": bool(a.skip_wgmtp or why_not)}
        m = re.search(r"-(q\d\w*|f16|f32|bf16)(-mtp)?\.gguf$", model.name, re.I)
        res["wtype"] = m.group(1).upper() if m else "?"
        runs = [("llama.cpp vulkan", lambda: llama_bench_rows(llama_bench, model, "vulkan", vk, a))]
        if not a.skip_cpu:
            runs.append(("llama.cpp cpu", lambda: llama_bench_rows(llama_bench, model, "cpu", None, a)))
        if not res["wgmtp_skipped"]:
            runs.append(("wgmtp", lambda: wgmtp_rows(model, wdev, a)))
        for eng, fn in runs:
            try:
                rows, diag = fn()
            except subprocess.TimeoutExpired:
                rows, diag = [], {"rc": None, "errors": [f"timed out after {a.timeout} s"]}
            res["diag"][eng] = diag
            if not rows:
                res["failed"][eng] = diag.get("errors")
                log(f"{eng} on {model.name} failed: rc {diag.get('rc')}; " + "; ".join(diag.get("errors", [])[:5]))
            res["rows"] += rows
        if res["wtype"] == "?":
            wt = next((r.get("weight_type") for r in res["rows"] if r.get("weight_type")), None)
            res["wtype"] = wt or next((r.get("model_type", "?").split()[-1] for r in res["rows"]
                                       if r.get("model_type")), "?")
        # 4. correctness: greedy ids for the same prompt ids
        if not a.skip_check:
            chk = {}
            try:
                ids = prompt_ids(model)
                chk["prompt_ids"] = ids
                if greedy:
                    chk["llama.cpp vulkan"] = llama_greedy(greedy, model, "vulkan", vk, ids, a.check_tokens, a)
                    if not a.skip_cpu:
                        chk["llama.cpp cpu"] = llama_greedy(greedy, model, "cpu", None, ids, a.check_tokens, a)
                else:
                    chk["note"] = "no greedy helper (give --llama-src); token comparison skipped"
                chk["llama-completion"] = llama_completion(bin_dir, model, vk, a)
                if not a.skip_wgmtp:
                    chk["wgmtp"] = wgmtp_greedy(model, wdev, ids, a.check_tokens, a)
                ref = chk.get("wgmtp")
                for eng in ("llama.cpp vulkan", "llama.cpp cpu"):
                    if ref and ref.get("ok") and chk.get(eng, {}).get("ok"):
                        chk[f"wgmtp vs {eng}"] = compare(ref, chk[eng], end_ids(model))
                for eng in ("llama.cpp vulkan", "llama.cpp cpu"):
                    if chk.get(eng, {}).get("ok") and "text_ids" in chk[eng]:
                        chk["tokenizer_agrees"] = chk[eng]["text_ids"] == ids
                        break
                if chk.get("llama.cpp vulkan", {}).get("ok") and chk.get("llama.cpp cpu", {}).get("ok"):
                    chk["llama.cpp vulkan vs cpu"] = compare(chk["llama.cpp cpu"], chk["llama.cpp vulkan"])
            except Exception as e:  # noqa: BLE001 - report, keep the table
                chk["error"] = f"{type(e).__name__}: {e}"
            res["check"] = chk
        results.append(res)

    mtp = None
    if not a.skip_check and not a.skip_mtp_check:
        try:
            mtp = mtp_check(bin_dir, greedy, vk, wdev, cache_root, a)
        except Exception as e:  # noqa: BLE001
            mtp = {"error": f"{type(e).__name__}: {e}"}

    # report
    print()
    print(table(results, a))
    print()
    print(f"Produced by `{command}` ({time.strftime('%Y-%m-%d')}); ratios are wgmtp / "
          "llama.cpp Vulkan on the same adapter.")
    if why_not:
        print(f"wgmtp skipped: `wgmtp bench` is not available ({why_not}).")
    ver = info.get("llama_cpp_python")
    bc = next((r.get("build_commit") for res in results for r in res["rows"] if r.get("build_commit")), None)
    print("llama.cpp: " + (f"llama-cpp-python {ver} sdist, " if ver else "")
          + f"commit {bc or info.get('llama_cpp_commit') or '?'}"
          + (f", built in {info['build_s']:.0f} s" if info.get("build_s") else "")
          + (" (cached build)" if info.get("reused") and not info.get("given") else "")
          + f"; Vulkan device: {vk_name}; CPU: {_cpu_name()}.")
    for res in results:
        print(f"- {Path(res['model']).name}: {res['size_bytes'] / 1e6:.0f} MB")
        for eng, errs in res["failed"].items():
            print(f"  - {eng} FAILED: " + "; ".join(errs or ["(no message)"]))
        chk = res.get("check", {})
        if "error" in chk:
            print(f"  - check error: {chk['error']}")
        if "tokenizer_agrees" in chk:
            print("  - tokenizer: llama.cpp's ids for the check prompt " +
                  ("equal wgmtp's" if chk["tokenizer_agrees"] else "DIFFER from wgmtp's"))
        warn = [w for e in ("llama.cpp vulkan", "llama.cpp cpu") for w in chk.get(e, {}).get("warnings", [])]
        warn = sorted({re.sub(r"blk\.\d+\.\S+", "blk.N.*", w) for w in warn if "Device type is CPU" not in w})
        if warn:
            print("  - llama.cpp load warnings: " + "; ".join(warn[:6]))
        for eng in ("llama.cpp vulkan", "llama.cpp cpu", "wgmtp"):
            c = chk.get(eng)
            if c and not c.get("ok"):
                print(f"  - {eng} greedy run FAILED: " + "; ".join(c.get("errors", [])[:5]))
        lc = chk.get("llama-completion")
        if lc and not lc.get("ok"):
            print("  - llama-completion FAILED: " + "; ".join(lc.get("errors", [])[:5]))
        for key in ("wgmtp vs llama.cpp vulkan", "wgmtp vs llama.cpp cpu", "llama.cpp vulkan vs cpu"):
            c = chk.get(key)
            if not c:
                continue
            if c["agree"]:
                print(f"  - greedy {key}: all {c['compared']} tokens agree")
            elif c["first_divergence"] is None:
                print(f"  - greedy {key}: first {c['compared']} agree; {c.get('note', '')}")
            else:
                ref_name, other_name = (("wgmtp", key.split(" vs ")[1]) if key.startswith("wgmtp") else
                                        ("llama.cpp cpu", "llama.cpp vulkan"))
                print(f"  - greedy {key}: first divergence at token {c['first_divergence']} of {c['compared']} "
                      f"(top-2 logit margins there: {ref_name} {_f(c['margin_ref'], 3)}, "
                      f"{other_name} {_f(c['margin_other'], 3)})")
    if mtp:
        print(f"- MTP speculation, n_max 3, {a.check_tokens} tokens, predictable model "
              f"{Path(mtp.get('model', '?')).name}:")
        if "error" in mtp:
            print(f"  - error: {mtp['error']}")
        for eng in ("llama.cpp cpu", "llama.cpp vulkan", "wgmtp"):
            r = mtp.get(eng)
            if not r:
                continue
            if not r.get("ok"):
                print(f"  - {eng}: FAILED: " + "; ".join(r.get("errors", [])[:4]))
                continue
            d, k = (r.get("n_drafted"), r.get("n_accept")) if eng != "wgmtp" else (r["drafted"], r["accepted"])
            if d is None:
                print(f"  - {eng}: ran, but " + "; ".join(r.get("errors", ["no stats"])))
                continue
            acc = f"{100 * k / d:.1f}%" if d else "-"
            extra = (f", lossless (spec ids == plain ids): {r['lossless']}" if eng == "wgmtp" else "")
            if r.get("crashes"):
                extra += f" (after {r['crashes']} crash{'es' if r['crashes'] > 1 else ''} in the driver)"
            print(f"  - {eng}: drafted {d}, accepted {k} ({acc}){extra}")
        for key in ("wgmtp vs llama.cpp cpu", "wgmtp vs llama.cpp vulkan", "llama.cpp vulkan vs cpu"):
            c = mtp.get(key)
            if c:
                print(f"  - greedy {key}: " + (f"all {c['compared']} agree" if c["agree"] else
                      f"first divergence at token {c['first_divergence']} (top-2 logit margin there: "
                      f"{key.split(' vs ')[0] if key.startswith('llama') else key.split(' vs ')[1]} "
                      f"{_f(c['margin_other'], 3)})" if c["first_divergence"] is not None
                      else c.get("note", "")))
        if "same_prompt_ids" in mtp:
            print(f"  - same prompt ids in both engines: {mtp['same_prompt_ids']}")
    if a.json:
        Path(a.json).write_text(json.dumps({"command": command, "build": info, "vk_device": vk_name, "mtp_check": mtp,
                                            "vk_visible_devices": vk, "wgmtp_device": wdev,
                                            "args": vars(a), "results": results}, indent=1, default=str))
        print(f"\nraw results: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
