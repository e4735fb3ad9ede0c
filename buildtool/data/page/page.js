// The picker: the manifest (embedded by `buildtool index`) -> the exact install command. No network.
"use strict";
(function () {
  const manifest = JSON.parse(document.getElementById("manifest").textContent);
  const wheels = manifest.wheels;
  const $ = (id) => document.getElementById(id);
  const ONELINER = 'python -c "import sys,platform,torch;print(\'py=%d.%d torch=%s cuda=%s abi=%s os=%s arch=%s\'%(sys.version_info[0],sys.version_info[1],torch.__version__,torch.version.cuda,torch._C._GLIBCXX_USE_CXX11_ABI,sys.platform,platform.machine()))"';
  const OS_NAMES = { "linux-x86_64": "Linux x86_64", "linux-aarch64": "Linux aarch64", "windows-x86_64": "Windows x86_64", "any": "any" };
  const siteBase = manifest.base_url ? manifest.base_url.replace(/\/+$/, "") + "/" : new URL(".", window.location.href).href;
  const indexUrl = /^[a-z]+:/.test(manifest.index_url) ? manifest.index_url : new URL("simple/", siteBase).href;
  const wheelUrl = (w) => (/^[a-z]+:/.test(w.url) ? w.url : new URL(w.url, siteBase).href);
  const channels = Object.fromEntries((manifest.channels || []).map((c) => [c.id, c]));
  const channelUrl = (w) => {
    const c = channels[w.channel];
    if (!c) return indexUrl;
    return /^[a-z]+:/.test(c.url) ? c.url : new URL(c.url, siteBase).href;
  };
  const TORCH_OF_THIS_PYTHON = "$(python -c 'import importlib.metadata as m; print(m.version(\"torch\"))')";
  const PYPI = manifest.pypi_url;
  const pyOf = (tag) => (tag.startsWith("cp") ? tag[2] + "." + tag.slice(3) : tag);
  const cmpVer = (a, b) => {
    const pa = String(a).split(/[.+]/).map((x) => parseInt(x, 10) || 0), pb = String(b).split(/[.+]/).map((x) => parseInt(x, 10) || 0);
    for (let i = 0; i < Math.max(pa.length, pb.length); i++) { const d = (pa[i] || 0) - (pb[i] || 0); if (d) return d; }
    return 0;
  };
  const uniq = (xs) => Array.from(new Set(xs));
  const abiText = (v) => (v === null || v === undefined ? "n/a" : v ? "TRUE" : "FALSE");
  let exactTorch = null; // full torch version from a pasted environment (pins torch exactly)

  function fill(select, values, label) {
    const old = select.value;
    select.innerHTML = "";
    for (const v of values) {
      const o = document.createElement("option");
      o.value = v; o.textContent = label ? label(v) : v;
      select.appendChild(o);
    }
    if (values.includes(old)) select.value = old;
  }

  const FIELDS = ["package", "os", "python", "torch", "cuda", "abi"];
  // Each wheel's value for each select. A stable-ABI (abi3) wheel serves every Python >= its tag and every
  // torch its Requires-Dist allows, so it is listed under those.
  const pythonsOf = (w) => (w.abi_tag === "abi3" ? allPythons.filter((p) => cmpVer(p, pyOf(w.python_tag)) >= 0) : [pyOf(w.python_tag)]);
  const torchFloor = (w) => {
    for (const r of w.requires_dist || []) { const m = r.match(/^torch\s*>=\s*([0-9.]+)\s*$/); if (m) return m[1]; }
    return null;
  };
  let allPythons = [], allTorches = [];
  const torchesOf = (w) => (w.torch ? [w.torch] : torchFloor(w) ? allTorches.filter((t) => cmpVer(t, torchFloor(w)) >= 0) : ["none"]);
  const valuesOf = (w, field) => ({
    package: [w.package], os: [w.platform], python: pythonsOf(w), torch: torchesOf(w), cuda: [w.cuda || "none"],
    abi: w.cxx11_abi === null || w.cxx11_abi === undefined ? ["TRUE", "FALSE"] : [abiText(w.cxx11_abi)],
  })[field];
  const ORDER = { package: (a, b) => a.localeCompare(b), os: (a, b) => a.localeCompare(b), python: cmpVer,
    torch: (a, b) => cmpVer(b, a), cuda: (a, b) => cmpVer(b, a), abi: (a, b) => b.localeCompare(a) };

  function fitsExcept(w, sel, skip) {
    return FIELDS.every((f) => f === skip || sel[f] === undefined || (f === "cuda"
      ? valuesOf(w, f).some((v) => cudaMatches(v === "none" ? null : v, sel[f]))
      : f === "os" ? (w.platform === sel.os || w.platform === "any") : valuesOf(w, f).includes(sel[f])));
  }

  // Narrow the selects in order (package, OS, Python, torch, CUDA, ABI): each offers only the values some wheel
  // has given the selections before it, so every option leads to a wheel; a selection that no longer exists
  // moves to the first one that does.
  function narrow() {
    for (let i = 0; i < FIELDS.length; i++) {
      const f = FIELDS[i];
      const sel = selected();
      const earlier = Object.fromEntries(FIELDS.slice(0, i).map((g) => [g, sel[g]]));
      const vals = uniq(wheels.filter((w) => fitsExcept(w, earlier, f)).flatMap((w) => valuesOf(w, f)))
        .filter((v) => !(f === "os" && v === "any")).sort(ORDER[f]);
      fill($(f), vals, f === "os" ? (v) => OS_NAMES[v] || v : null);
    }
  }

  // Every value of every select, whatever the others say (a pasted environment is matched against these).
  function fillAll() {
    for (const f of FIELDS) {
      const vals = uniq(wheels.flatMap((w) => valuesOf(w, f))).filter((v) => !(f === "os" && v === "any")).sort(ORDER[f]);
      fill($(f), vals, f === "os" ? (v) => OS_NAMES[v] || v : null);
    }
  }

  function setup() {
    $("oneliner").textContent = ONELINER;
    $("index-url").textContent = indexUrl;
    allPythons = uniq(wheels.filter((w) => w.abi_tag !== "abi3").map((w) => pyOf(w.python_tag)).concat(["3.10", "3.11", "3.12", "3.13"])).sort(cmpVer);
    allTorches = uniq(wheels.map((w) => w.torch).filter((t) => t)).sort(cmpVer);
    // Open on a combination that has a wheel: the newest torch's newest build of the first package.
    const first = wheels.slice().sort((a, b) => cmpVer(b.torch || "0", a.torch || "0") || cmpVer(pyOf(b.python_tag), pyOf(a.python_tag)))
      .find((w) => w.platform.startsWith("linux")) || wheels[0];
    if (first) {
      for (const f of FIELDS) fill($(f), valuesOf(first, f), f === "os" ? (v) => OS_NAMES[v] || v : null);
      const pys = valuesOf(first, "python");
      $("python").value = pys[pys.length - 1];
    }
    narrow();
    for (const id of FIELDS) {
      $(id).addEventListener("change", () => { if (id === "torch") exactTorch = null; narrow(); update(); });
    }
    $("apply-paste").addEventListener("click", applyPaste);
    renderTable();
    update();
  }

  function cudaMatches(wheelCuda, wanted) {
    // Upstream-style labels carry the CUDA major only ('12'); ours carry major.minor ('12.4').
    if (!wheelCuda || wanted === "none") return (wheelCuda || "none") === wanted;
    if (!wheelCuda.includes(".") || !wanted.includes(".")) return wheelCuda.split(".")[0] === wanted.split(".")[0];
    return wheelCuda === wanted;
  }

  function selected() {
    return { package: $("package").value, os: $("os").value, python: $("python").value, torch: $("torch").value,
      cuda: $("cuda").value, abi: $("abi").value };
  }

  function matching(sel) {
    return wheels.filter((w) => fitsExcept(w, sel, null))
      .sort((a, b) => cmpVer(b.public_version, a.public_version) || (a.abi_tag === "abi3") - (b.abi_tag === "abi3"));
  }

  // The installed torch is pinned so that no installer can swap it: the pasted version, else the shell reads it.
  function torchPin() {
    return exactTorch ? "torch==" + exactTorch : '"torch==' + TORCH_OF_THIS_PYTHON + '"';
  }

  function update() {
    const sel = selected();
    const found = matching(sel);
    const status = $("result-status");
    if (!found.length) {
      status.textContent = "No wheel for " + sel.package + " with Python " + sel.python + ", torch " + sel.torch
        + ", CUDA " + sel.cuda + " on " + (OS_NAMES[sel.os] || sel.os) + (sel.os.startsWith("windows") ? "" : " (ABI " + sel.abi + ")") + ".";
      status.className = "status bad";
      for (const id of ["command", "command-uv", "command-buildtool", "channel-url"]) $(id).textContent = "";
      $("wheel-link").textContent = ""; $("wheel-link").removeAttribute("href"); $("wheel-info").textContent = "";
      return;
    }
    const w = found[0];
    const pin = torchPin();
    const channel = channelUrl(w);
    $("channel-url").textContent = channel;
    $("command").textContent = "pip install --only-binary " + w.package + " --index-url " + channel
      + " --extra-index-url " + PYPI + " " + w.package + " " + pin;
    $("command-uv").textContent = "uv pip install --index-url " + PYPI + " --extra-index-url " + channel + " " + w.package + " " + pin;
    $("command-buildtool").textContent = "buildtool install " + w.package + " --index " + siteBase;
    const link = $("wheel-link");
    link.href = wheelUrl(w); link.textContent = w.filename;
    $("wheel-info").textContent = "(" + (w.size / 1e6).toFixed(1) + " MB, archs " + (w.archs.length ? w.archs.join(" ") : "unknown")
      + (w.ptx ? " + PTX " + w.ptx : "") + (w.min_glibc ? ", glibc \u2265 " + w.min_glibc : "")
      + (w.min_driver_cuda ? ", NVIDIA driver for CUDA \u2265 " + w.min_driver_cuda : "") + ", sha256 " + w.sha256.slice(0, 16) + "\u2026)";
    status.textContent = "Found " + w.filename + (found.length > 1 ? " (newest of " + found.length + ")" : "");
    status.className = "status good";
  }

  function parsePaste(text) {
    const env = {};
    for (const m of text.matchAll(/(\w+)=(\S+)/g)) env[m[1]] = m[2];
    if (!env.py || !env.torch) return null;
    const machine = (env.arch || "x86_64").toLowerCase().replace("amd64", "x86_64").replace("arm64", "aarch64");
    const os = (env.os || "linux").startsWith("win") ? "windows" : "linux";
    const m = env.torch.match(/^(\d+)\.(\d+)/);
    return { python: env.py, torchFull: env.torch, torch: m ? m[1] + "." + m[2] : env.torch,
      cuda: env.cuda && env.cuda !== "None" ? env.cuda : "none", abi: env.abi === "True" ? "TRUE" : "FALSE",
      os: os + "-" + machine };
  }

  function choose(select, value) {
    const ok = Array.from(select.options).some((o) => o.value === value);
    if (ok) select.value = value;
    return ok;
  }

  function applyPaste() {
    const env = parsePaste($("paste").value);
    const status = $("paste-status");
    if (!env) { status.textContent = "Could not read that: paste the one line the command prints."; status.className = "status bad"; return; }
    fillAll();
    const missing = [];
    if (!choose($("os"), env.os)) missing.push("OS " + env.os);
    if (!choose($("python"), env.python)) missing.push("Python " + env.python);
    if (!choose($("torch"), env.torch)) missing.push("torch " + env.torch);
    let cudaOk = choose($("cuda"), env.cuda);
    if (!cudaOk && env.cuda !== "none") {
      const major = Array.from($("cuda").options).find((o) => o.value.split(".")[0] === env.cuda.split(".")[0] && !o.value.includes("."));
      if (major) { $("cuda").value = major.value; cudaOk = true; }
    }
    if (!cudaOk) missing.push(env.cuda === "none" ? "a CPU-only torch (these are CUDA kernels)" : "CUDA " + env.cuda);
    if (!env.os.startsWith("windows")) choose($("abi"), env.abi);
    exactTorch = env.torchFull;
    if (!missing.length) narrow();
    status.textContent = missing.length ? "This index has no wheel for " + missing.join(", ") + "." : "Environment applied: torch " + env.torchFull + ", Python " + env.python + ".";
    status.className = missing.length ? "status bad" : "status good";
    update();
  }

  function renderTable() {
    const body = document.querySelector("#wheels tbody");
    for (const w of wheels) {
      const tr = document.createElement("tr");
      const cells = [w.package, w.version, OS_NAMES[w.platform] || w.platform, pyOf(w.python_tag), w.torch || "", w.cuda || "",
        abiText(w.cxx11_abi), w.archs.join(" ") + (w.ptx ? " +PTX" : ""),
        w.min_driver_cuda ? "CUDA \u2265 " + w.min_driver_cuda : "", (w.size / 1e6).toFixed(1) + " MB"];
      for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
      const td = document.createElement("td"); td.className = "sha";
      const a = document.createElement("a"); a.href = wheelUrl(w); a.textContent = w.sha256.slice(0, 12);
      td.appendChild(a); tr.appendChild(td);
      body.appendChild(tr);
    }
  }

  setup();
})();
