"""The live dashboard in a real headless browser (Debian's chromium): served by the API, it renders the
worker's live numbers, the experiment's variants with their intervals, and one user's list. The
screenshot is kept as an artifact (artifacts/test/dashboard.png)."""
import re
import shutil
import subprocess
import threading
import time
from dataclasses import replace

import pytest
from conftest import IN_CI, ROOT, start_worker, wait_for

from stream.core.storage.serving import latest_key
from stream.ops.stack import free_port

pytestmark = pytest.mark.integration
ARTIFACT = ROOT / "artifacts" / "test" / "dashboard.png"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if IN_CI:
        pytest.fail("chromium is missing in CI (.ci/run installs it)")
    pytest.skip("no chromium on this machine (apt-get install chromium); CI installs it")


def _browse(chromium: str, url: str, *args: str) -> str:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--virtual-time-budget=8000", *args, url]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120).stdout


def test_dashboard_renders_live_numbers_variants_and_a_users_list(settings, tmp_path):
    import uvicorn

    from stream.drivers.api import create_app
    from stream.ops.simulate import SimConfig, run_kafka
    chromium = _chromium()
    exp = tmp_path / "exp.toml"
    exp.write_text('name = "dash"\n[[variant]]\nname = "A"\n[[variant]]\nname = "B"\nranker = "off"\n')
    s = replace(settings, encoder_dir="", model_dir=str(tmp_path / "models"), experiments=str(exp))
    worker = start_worker(s, log=tmp_path / "worker.log")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(s), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        from stream.core.storage.store import connect
        r = connect(s.redis_url)
        wait_for(lambda: r.hlen(s.key_prefix + "workers"), 30, what="the worker's heartbeat")
        run_kafka(s, SimConfig(n_users=80, n_items=200, users_per_round=40, rounds=4, seed=2))
        wait_for(lambda: r.exists(latest_key(s.key_prefix, "s1")) or None, 30, what="a list for s1")
        time.sleep(2.5)                              # one more heartbeat, with the run's numbers
        dom = _browse(chromium, f"http://127.0.0.1:{port}/dashboard?user=s1", "--dump-dom")
        events = int(re.search(r'id="events">(\d+)<', dom).group(1))
        assert events > 0 and re.search(r'id="workers">1<', dom)
        assert re.search(r'id="p99">[\d.]+<', dom)                     # a latency, not the placeholder
        assert 'data-variant="A"' in dom and 'data-variant="B"' in dom and "…" in dom   # intervals drawn
        rows = re.findall(r"<tr><td>(\d+)</td><td>(i\d+)</td>", dom)         # the user's live list
        assert len(rows) >= 5 and rows[0][0] == "1"
        # the same numbers for Prometheus (and the provisioned Grafana dashboard)
        import httpx
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert re.search(r'recstream_ab_rate\{bound="value",experiment="dash",metric="click_through",variant="B"\} '
                         r'[\d.e-]+', text)
        assert 'recstream_ab_lists{experiment="dash",variant="A"}' in text
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        ARTIFACT.unlink(missing_ok=True)
        _browse(chromium, f"http://127.0.0.1:{port}/dashboard?user=s1", "--hide-scrollbars", "--window-size=1280,1000",
                f"--screenshot={ARTIFACT}")
        assert ARTIFACT.exists() and ARTIFACT.stat().st_size > 10_000
    finally:
        server.should_exit = True
        th.join(10)
        worker.terminate()
        worker.wait(20)
