"""MiniWoB++ adapter: grid actions, the offline Chromium wrapper and the DOM oracle, on real headless Chromium."""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path

import numpy as np
import pytest

from gea_envs import ADAPTERS, Domain, UIAction, UIActionSpace, get_adapter
from gea_envs.adapters.miniwob_adapter import GRID, SCREEN_HEIGHT, SCREEN_WIDTH, TASKS, MiniWoBAdapter
from gea_envs.adapters.miniwob_oracle import (
    DomElement,
    Page,
    ScreenGrid,
    choose_click_cell,
    plan_click_checkboxes,
)
from gea_envs.rollout import run_expert_episode

IMAGE_SIZE = 64
ORACLE_SEEDS = (0, 1, 2)
TASK_NAMES = [f"miniwob/{task.subdomain}" for task in TASKS]
REQUIRED_TASKS = ("click-button", "click-link", "click-checkboxes", "enter-text", "focus-text")


def _element(ref: int, tag: str, box: tuple[float, float, float, float], *, parent: int = 1, text: str = "",
             classes: str = "") -> DomElement:
    left, top, width, height = box
    return DomElement(
        ref=ref, parent=parent, tag=tag, text=text, value="", element_id="", classes=tuple(classes.split()),
        left=left, top=top, width=width, height=height, focused=False, is_leaf=True,
    )


# ---- Process and socket inspection through /proc (Linux only), for the browser tests. ----

def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name in parentheses may contain spaces, so split after its closing parenthesis.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def browser_process_tree(env) -> set[int]:
    """Return chromedriver's PID and those of all its descendants (the browser processes)."""
    root = env.unwrapped.instance.driver.service.process.pid
    children = _children_by_parent()
    tree, frontier = {root}, [root]
    while frontier:
        for child in children.get(frontier.pop(), []):
            tree.add(child)
            frontier.append(child)
    return tree


def _is_running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (a zombie has exited and only awaits reaping)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_until_exited(pids: set[int], timeout_s: float = 10.0) -> set[int]:
    deadline = time.monotonic() + timeout_s
    running = {pid for pid in pids if _is_running(pid)}
    while running and time.monotonic() < deadline:
        time.sleep(0.1)
        running = {pid for pid in running if _is_running(pid)}
    return running


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
TCP_LISTEN = "0A"


def _decode_proc_address(hex_address: str) -> IPAddress:
    """Decode an address from /proc/net/tcp{,6}: 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def tcp_sockets(pids: set[int]) -> list[tuple[str, IPAddress, IPAddress]]:
    """Return ``(state, local address, remote address)`` of every TCP socket that `pids` hold open.

    `state` is the kernel's hexadecimal TCP state, such as `TCP_LISTEN`.
    """
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes.update(link[len("socket:["):-1] for link in links if link.startswith("socket:["))
    sockets = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            columns = line.split()
            if columns[9] in inodes:
                local = _decode_proc_address(columns[1].split(":")[0])
                remote = _decode_proc_address(columns[2].split(":")[0])
                sockets.append((columns[3], local, remote))
    return sockets


# ---- Pure logic: registration, action conversion, click-cell choice. ----

def test_registration_lists_tasks():
    for name in (f"miniwob/{task}" for task in REQUIRED_TASKS):
        assert name in ADAPTERS
    for name in TASK_NAMES:
        adapter = get_adapter(name)
        assert isinstance(adapter, MiniWoBAdapter)
        assert adapter.name == name
        assert adapter.domain is Domain.UI_CONTROL
        assert adapter.action_space == UIActionSpace(grid_width=32, grid_height=42, max_text_chars=32)


def test_grid_covers_screenshot():
    assert GRID.columns * GRID.cell_pixels == SCREEN_WIDTH
    assert GRID.rows * GRID.cell_pixels == SCREEN_HEIGHT


def test_click_round_trip_every_cell():
    adapter = get_adapter("miniwob/click-button")
    for x in range(GRID.columns):
        for y in range(GRID.rows):
            action = UIAction(kind="click", x=x, y=y)
            env_action = adapter.to_env_action(action)
            left, top = env_action["coords"]
            assert 0 <= left < SCREEN_WIDTH
            assert 0 <= top < SCREEN_HEIGHT
            assert adapter.from_env_action(env_action) == action


def test_type_round_trip():
    adapter = get_adapter("miniwob/enter-text")
    action = UIAction(kind="type", text="Marcella")
    env_action = adapter.to_env_action(action)
    assert env_action["text"] == "Marcella"
    assert adapter.from_env_action(env_action) == action


def test_from_env_action_rejects_unknown():
    adapter = get_adapter("miniwob/click-button")
    with pytest.raises(ValueError, match="action_type 5"):
        adapter.from_env_action({"action_type": 5, "coords": np.zeros(2), "text": ""})
    with pytest.raises(ValueError, match="outside"):
        adapter.from_env_action({"action_type": 0, "coords": np.array([170.0, 10.0]), "text": ""})
    with pytest.raises(ValueError, match="outside"):
        adapter.to_env_action(UIAction(kind="click", x=GRID.columns, y=0))


def test_goal_needs_full_raw_reward():
    adapter = get_adapter("miniwob/click-checkboxes")
    assert adapter.goal_reached(0.9, True, {"raw_reward": 1.0})
    assert not adapter.goal_reached(0.5, True, {"raw_reward": 0.6})
    assert not adapter.goal_reached(0.0, False, {"raw_reward": 0.0})
    with pytest.raises(ValueError, match="raw_reward"):
        adapter.goal_reached(1.0, True, {})


def test_click_cell_hits_narrow_target():
    grid = ScreenGrid(cell_pixels=5, columns=32, rows=42)
    # A one-letter link as measured in click-link: 5.6 pixels wide, 11 tall.
    for left in np.arange(0.0, 10.0, 0.25):
        link = _element(2, "span", (float(left), 74.0, 5.5625, 11.0), classes="alink")
        cell = choose_click_cell(grid, Page("", (link,), {}), link)
        assert link.contains(*grid.click_point(*cell)), f"cell {cell} misses a link at left={left}"


def test_click_cell_avoids_overlapping_control():
    grid = ScreenGrid(cell_pixels=5, columns=32, rows=42)
    button_one = _element(2, "button", (50.0, 100.0, 40.0, 40.0), text="ONE")
    button_two = _element(3, "button", (70.0, 120.0, 40.0, 40.0), text="TWO")
    cell = choose_click_cell(grid, Page("", (button_one, button_two), {}), button_one)
    point = grid.click_point(*cell)
    assert button_one.contains(*point)
    assert not button_two.contains(*point)


def test_wrapper_script_adds_offline_flags():
    from gea_envs.adapters.miniwob_browser import OFFLINE_CHROMIUM_FLAGS, offline_chromium_binary

    with offline_chromium_binary() as wrapper:
        assert os.environ["MINIWOB_CHROME_BINARY"] == str(wrapper)
        script = wrapper.read_text()
    assert os.environ["MINIWOB_CHROME_BINARY"] != str(wrapper)
    assert os.access(wrapper, os.X_OK)
    assert script.startswith("#!/bin/sh\n")
    for flag in ("--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"):
        assert flag in OFFLINE_CHROMIUM_FLAGS
        assert flag in script
    assert script.rstrip().endswith('"$@"')


# ---- Real headless Chromium. ----

@pytest.fixture(scope="module")
def checkboxes():
    adapter = get_adapter("miniwob/click-checkboxes")
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    yield adapter, env
    env.close()


def test_observation_is_resized_screenshot(checkboxes):
    adapter, env = checkboxes
    raw_obs, info = env.reset(seed=3)
    assert raw_obs["screenshot"].shape == (SCREEN_HEIGHT, SCREEN_WIDTH, 3)
    observation = adapter.observe(env, raw_obs, info)
    assert len(observation.frames) == 1
    assert observation.frames[0].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert observation.frames[0].dtype == np.uint8
    assert observation.frames[0].std() > 0, "screenshot is blank"
    assert observation.instruction == "Select 91YPF, i6Vdpn2, nd7Qt, XPMut and click Submit."


def test_same_seed_same_first_frame(checkboxes):
    adapter, env = checkboxes
    first, _ = env.reset(seed=7)
    run_expert_episode(adapter, seed=8, image_size=IMAGE_SIZE, env=env)
    again, _ = env.reset(seed=7)
    other, _ = env.reset(seed=9)
    assert np.array_equal(first["screenshot"], again["screenshot"])
    assert first["utterance"] == again["utterance"]
    assert not np.array_equal(first["screenshot"], other["screenshot"])

    fresh_env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        fresh, _ = fresh_env.reset(seed=7)
    finally:
        fresh_env.close()
    assert np.array_equal(first["screenshot"], fresh["screenshot"])


def test_grid_click_toggles_checkbox(checkboxes):
    adapter, env = checkboxes
    raw_obs, _ = env.reset(seed=3)
    page = Page.from_observation(raw_obs)
    checkbox = page.find(lambda element: element.tag == "input_checkbox", "checkbox")
    assert checkbox.value == ""
    x, y = choose_click_cell(GRID, page, checkbox)

    raw_obs, reward, terminated, truncated, info = env.step(adapter.to_env_action(UIAction(kind="click", x=x, y=y)))

    assert not terminated
    toggled = Page.from_observation(raw_obs).find(lambda element: element.ref == checkbox.ref, "same checkbox")
    assert toggled.value == "True"


def test_partial_reward_is_not_success(checkboxes):
    adapter, env = checkboxes
    # Seed 3: five boxes, four to check. Checking three and submitting leaves one box wrong,
    # so MiniWoB pays a positive partial reward of (4 - 1) / 5.
    raw_obs, info = env.reset(seed=3)
    expert = adapter.make_expert(env)
    for _ in range(3):
        raw_obs, reward, terminated, _, info = env.step(adapter.to_env_action(expert.act(env, raw_obs, info)))
        assert not terminated
    page = Page.from_observation(raw_obs)
    submit = page.find(lambda element: element.element_id == "subbtn", "Submit button")
    assert plan_click_checkboxes(page).element != submit, "the oracle should still have a box to check"
    x, y = choose_click_cell(GRID, page, submit)

    raw_obs, reward, terminated, _, info = env.step(adapter.to_env_action(UIAction(kind="click", x=x, y=y)))

    assert terminated
    assert reward > 0
    assert info["raw_reward"] == pytest.approx(0.6)
    assert not adapter.goal_reached(reward, terminated, info)


def test_type_reaches_focused_box():
    adapter = get_adapter("miniwob/enter-text")
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    try:
        raw_obs, _ = env.reset(seed=0)
        page = Page.from_observation(raw_obs)
        text_box = page.find(lambda element: element.tag == "input_text", "text box")
        x, y = choose_click_cell(GRID, page, text_box)
        raw_obs, *_ = env.step(adapter.to_env_action(UIAction(kind="click", x=x, y=y)))
        raw_obs, *_ = env.step(adapter.to_env_action(UIAction(kind="type", text="abc XYZ")))
        sockets = tcp_sockets(browser_process_tree(env))
    finally:
        env.close()
    typed = Page.from_observation(raw_obs).find(lambda element: element.ref == text_box.ref, "same text box")
    assert typed.focused
    assert typed.value == "abc XYZ"
    connected = [remote for state, _, remote in sockets if state != TCP_LISTEN]
    assert connected, "expected chromedriver's loopback connections to the browser"
    assert all(remote.is_loopback for remote in connected), f"browser has non-loopback TCP peers: {sockets}"
    assert all(local.is_loopback for _, local, _ in sockets), f"browser listens beyond loopback: {sockets}"


@pytest.mark.parametrize("name", TASK_NAMES)
def test_oracle_solves_task(name):
    adapter = get_adapter(name)
    env = adapter.make_env(seed=0, image_size=IMAGE_SIZE)
    browser_pids = browser_process_tree(env)
    try:
        episodes = [run_expert_episode(adapter, seed, IMAGE_SIZE, env=env) for seed in ORACLE_SEEDS]
    finally:
        env.close()
    for episode in episodes:
        assert episode.success, f"seed {episode.seed}: {episode.instruction!r}, actions {episode.actions}"
        assert episode.length <= adapter.max_episode_steps
        assert all(frames[0].shape == (IMAGE_SIZE, IMAGE_SIZE, 3) for frames in episode.frames)
    assert len(browser_pids) > 2, "expected chromedriver and several Chromium processes"
    assert not _wait_until_exited(browser_pids), "Chromium processes still running after env.close()"
