"""The web view in a real headless Chromium, served by the chart's kflow API and reached through
the API server's service proxy (kubectl proxy) with a user's token typed into its sign-in form:
the order workflow's diamond is drawn, and a failed node re-runs when retried from the page.
Screenshots go to $KFLOW_ARTIFACTS (default /tmp/kflow-artifacts)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from kflow.devkit.checkout import REPO
from kflow.devkit.server import service_account_token
from kflow.devkit.web import (
    artifacts_dir,
    chromium,
    kflow_ui,
    kubectl_proxy,
    service_proxy_page,
)
from tests.e2e.installed.conftest import Installed, gate_queue, until
from tests.e2e.installed.test_installed_chart import wait_phase

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def token(installed: Installed) -> str:
    """A ServiceAccount bound to `edit` in the flows namespace: a user who may steer flows."""
    return service_account_token(installed.kube, installed.flows, "web-user", "edit",
                                 installed.flows)


@pytest.fixture(scope="module")
def page(installed: Installed, browser: Browser, token: str) -> Iterator[Page]:
    """The web view through the API server's service proxy (kubectl proxy for the hop), the
    user's token typed into its sign-in form."""
    service = f"{installed.inst.fullname}-api"
    with kubectl_proxy(installed.kube) as proxy:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(service_proxy_page(proxy, installed.inst.namespace, service)
                  + f"#/ns/{installed.flows}")
        # No token yet: the API answers 401 and the page asks for one.
        page.fill("#token", token)
        page.click("form.login button[type=submit]")
        page.wait_for_selector("#username")
        yield page
        context.close()


def open_flow(page: Page, namespace: str, name: str) -> None:
    """From the flows list, filtered by name, to the flow's page with its DAG drawn."""
    page.goto(page.url.split("#")[0] + f"#/ns/{namespace}")
    try:
        page.fill("#q", name)
        page.click("form.filters button[type=submit]")
        page.click(f'tr[data-flow="{name}"] a')
        page.wait_for_selector("body[data-dag=drawn]")
    except Exception:
        screenshot(page, f"{name}-not-shown")
        raise


def screenshot(page: Page, name: str) -> None:
    page.screenshot(path=str(artifacts_dir() / f"web-{name}.png"), full_page=True)


def test_the_order_workflows_diamond_is_drawn_with_one_payment_node(
        installed: Installed, page: Page) -> None:
    installed.kube("-n", installed.flows, "apply", "-f",
                   str(REPO / "examples" / "order-workflow.yaml"))
    assert wait_phase(installed, "order-a17", timeout=300)["phase"] == "Succeeded"

    open_flow(page, installed.flows, "order-a17")
    screenshot(page, "order-a17")

    payment = page.locator('[data-node="process-payment"]')
    assert payment.count() == 1
    assert payment.get_attribute("data-state") == "completed"
    parents = page.eval_on_selector_all(
        '[data-edge-from="process-payment"]', "els => els.map(e => e.dataset.edgeTo).sort()")
    assert parents == ["prepare-shipping", "reserve-inventory"]
    assert page.locator("[data-node]").count() == 8
    assert page.locator("#summary [data-phase]").inner_text() == "Succeeded"

    payment.click()
    page.wait_for_selector('#panel[data-shown="process-payment"] [data-section=result]')
    assert "pay-A-17" in page.inner_text("#panel [data-section=result]")
    assert page.inner_text("#panel [data-section=parents]").count(",") == 1
    screenshot(page, "order-a17-payment")


def gated_flow() -> list[dict[str, Any]]:
    queue = gate_queue("web-gate")
    flow = {"apiVersion": "kflow.dev/v1alpha1", "kind": "Flow", "metadata": {"name": "web-retry"},
            "spec": {"defaults": {"attempts": 1}, "nodes": [
                {"name": "report", "queue": "web-gate", "data": {"failUntilAttempt": 0},
                 "children": [{"name": "gated", "queue": "web-gate",
                               "data": {"failUntilAttempt": 0}}]}],
                # Runs once the flow has failed, and fails too while the gate is closed.
                "onExit": [{"name": "clean-up", "queue": "web-gate"}]}}
    return [queue, flow]


def test_retry_from_the_page_reruns_the_failed_node(installed: Installed, page: Page) -> None:
    kube, ns = installed.kube, installed.flows
    kube.apply(gated_flow(), ns)
    assert wait_phase(installed, "web-retry", timeout=300)["phase"] == "Failed"
    open_flow(page, ns, "web-retry")
    gated = page.locator('[data-node="gated"]')
    assert gated.get_attribute("data-state") == "failed"
    assert page.locator('[data-node="report"]').get_attribute("data-state") != "completed"

    def panel_shows(*texts: str, section: str = "attempts") -> Callable[[], bool]:
        def check() -> bool:
            gated.click()  # reads the node again
            shown = page.locator(f'#panel[data-shown="gated"] [data-section={section}]')
            return shown.count() > 0 and all(t in shown.inner_text() for t in texts)
        return check

    until("the failed attempt's log in the panel", panel_shows("the gate is closed"), timeout=180)

    def exit_shown() -> bool:  # the summary is read again on the flow's events and on reload
        page.reload()
        page.wait_for_selector("#summary [data-phase]")
        shown = page.locator(".failures [data-section=exit]")
        return shown.count() > 0 and "on exit: Failed 1/1" in shown.inner_text() \
            and "clean-up" in shown.inner_text()

    until("the exit handlers' outcome in the summary", exit_shown, timeout=240)
    gated = page.locator('[data-node="gated"]')
    until("the failed node's panel again", panel_shows("the gate is closed"), timeout=60)
    screenshot(page, "retry-failed")
    installed.open_gate("web-gate")

    page.click('#panel [data-action="retry-node"]')

    # The page follows the flow live: the node and the flow end well without a reload.
    page.wait_for_selector('[data-node="gated"][data-state="completed"]', timeout=240_000)
    page.wait_for_selector('#summary [data-phase="Succeeded"]', timeout=240_000)
    assert page.locator('[data-node="report"]').get_attribute("data-state") == "completed"
    until("the new attempt's log in the panel", panel_shows("the gate is open"), timeout=180)
    until("the result in the panel", panel_shows('"ok": true', section="result"), timeout=180)
    assert page.locator("#panel [data-section=error]").count() == 0
    screenshot(page, "retry-succeeded")


def test_through_kflow_ui_the_page_needs_no_token(installed: Installed, browser: Browser,
                                                  token: str) -> None:
    api = f"{installed.inst.namespace}/{installed.inst.fullname}-api"
    with kflow_ui(installed.kube, api, token) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{url}/#/ns/{installed.flows}")
            page.wait_for_selector('tr[data-flow="order-a17"]')
            assert page.locator("#token").count() == 0
            assert page.inner_text("#username") == (
                f"system:serviceaccount:{installed.flows}:web-user")
            phases = {row.get_attribute("data-flow"): row.locator("[data-phase]").inner_text()
                      for row in page.locator("tr[data-flow]").all()}
            assert phases == {"order-a17": "Succeeded", "web-retry": "Succeeded"}
            screenshot(page, "kflow-ui-flows")
        finally:
            context.close()
