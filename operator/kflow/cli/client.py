"""How the CLI reaches the kflow API: the kubeconfig's cluster and credentials for the hop
through the API server's service proxy, the caller's own bearer token in X-Kflow-Token."""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import urllib3

DEFAULT_API = "kflow-system/kflow-api"
TOKEN_HEADER = "X-Kflow-Token"

# Exit codes of the cluster commands (`run --local` and `lint` keep theirs: 0, 1, 2, 3).
EXIT_OK = 0
EXIT_FLOW_FAILED = 1  # the flow ended Failed or Cancelled (submit --wait, wait, watch)
EXIT_USAGE = 2  # bad arguments or an invalid file
EXIT_ERROR = 3  # the API or the cluster could not be reached, or answered another error
EXIT_DENIED = 4  # 401 or 403: who you are, or what RBAC lets you do
EXIT_NOT_FOUND = 5  # no such flow, node or namespace
EXIT_TIMEOUT = 6  # `wait --timeout` ran out


class CliError(Exception):
    """A failure told to the user in one line, with the exit code it ends the command with."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ApiError(CliError):
    """An error answer of the kflow API (or of the API server on the way to it)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        code = (EXIT_DENIED if status in (401, 403)
                else EXIT_NOT_FOUND if status == 404 else EXIT_ERROR)
        super().__init__(message, code)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ApiLocation:
    """Where the kflow API Service is: its namespace and name."""

    namespace: str
    service: str

    @classmethod
    def parse(cls, value: str | None) -> ApiLocation:
        text = value or os.environ.get("KFLOW_API") or DEFAULT_API
        namespace, _, service = text.partition("/")
        if not namespace or not service or "/" in service:
            raise CliError(f"--api {text!r}: expected NAMESPACE/SERVICE, like {DEFAULT_API} "
                           "(the chart's Service is <release>-api in the release's namespace)",
                           EXIT_USAGE)
        return cls(namespace, service)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.service}"


@dataclass
class Connection:
    """One kubeconfig context, resolved: the API server, TLS, the hop's credentials, the
    default namespace and the user's bearer token (None for a client-certificate user)."""

    host: str
    namespace: str
    context: str
    user: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    tls_server_name: str | None = None
    hop_token: str | None = None  # the kubeconfig's own bearer token, for the proxy hop
    token: str | None = None  # the caller's token for X-Kflow-Token
    configuration: Any = field(default=None, repr=False)  # kubernetes.client.Configuration

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS the kubeconfig asks for, for clients other than urllib3 (the UI proxy)."""
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def hop_headers(self) -> dict[str, str]:
        """Headers that authenticate the hop to the API server (a cert needs none)."""
        token = self.hop_token
        hook = getattr(self.configuration, "refresh_api_key_hook", None)
        if hook is not None:  # an exec plugin's token may have expired: the loader renews it
            hook(self.configuration)
            token = _configured_token(self.configuration) or token
        return {"Authorization": f"Bearer {token}"} if token else {}


def _configured_token(configuration: Any) -> str | None:
    """The bearer token the kubernetes loader found (token, tokenFile, exec, auth provider)."""
    keys = configuration.api_key
    return _bearer(keys.get("BearerToken")) or _bearer(keys.get("authorization"))


def _bearer(value: str | None) -> str | None:
    if value and value.startswith("Bearer "):
        return value[len("Bearer "):].strip() or None
    return None


def load_connection(
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
) -> Connection:
    """Read the kubeconfig as kubectl does (KUBECONFIG, ~/.kube/config; --context), resolving
    token files and exec plugins through the kubernetes client's loader."""
    from kubernetes import config as kube_config
    from kubernetes.client import Configuration
    from kubernetes.config.config_exception import ConfigException

    configuration = Configuration()
    try:
        contexts, active = kube_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig)
        chosen = active
        if context is not None:
            chosen = next((c for c in contexts if c.get("name") == context), None)
            if chosen is None:
                names = ", ".join(sorted(str(c.get("name")) for c in contexts)) or "none"
                raise CliError(f"--context {context}: the kubeconfig has no such context "
                               f"(it has: {names})", EXIT_USAGE)
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration,
            persist_config=False)
    except ConfigException as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise CliError(f"kubeconfig {where}: {exc} (pass --kubeconfig FILE or set KUBECONFIG)",
                       EXIT_USAGE) from None
    except OSError as exc:
        raise CliError(f"kubeconfig: cannot read: {exc} (pass --kubeconfig FILE or set "
                       "KUBECONFIG)", EXIT_USAGE) from None
    details = (chosen or {}).get("context") or {}
    hop_token = _configured_token(configuration)
    return Connection(
        host=configuration.host.rstrip("/"),
        namespace=namespace or details.get("namespace") or "default",
        context=str((chosen or {}).get("name") or ""),
        user=str(details.get("user") or ""),
        ca_file=configuration.ssl_ca_cert,
        cert_file=configuration.cert_file,
        key_file=configuration.key_file,
        verify=bool(configuration.verify_ssl),
        tls_server_name=configuration.tls_server_name,
        hop_token=hop_token,
        token=token or os.environ.get("KFLOW_TOKEN") or hop_token,
        configuration=configuration,
    )


@dataclass(frozen=True)
class Event:
    """One server-sent event: its name, its data (JSON decoded when it is JSON) and id."""

    name: str
    data: Any
    id: str | None = None


def parse_sse(chunks: Iterator[bytes]) -> Iterator[Event]:
    """Server-sent events from a byte stream (comments, such as keep-alives, skipped)."""
    buffer = b""
    name, event_id = "message", None
    data: list[str] = []
    for chunk in chunks:
        buffer += chunk
        while True:
            cut = buffer.find(b"\n")
            if cut < 0:
                break
            raw, buffer = buffer[:cut], buffer[cut + 1:]
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if not line:
                if data:
                    text = "\n".join(data)
                    try:
                        value: Any = json.loads(text)
                    except ValueError:
                        value = text
                    yield Event(name, value, event_id)
                elif name != "message":
                    yield Event(name, None, event_id)
                name, data = "message", []
                continue
            if line.startswith(":"):
                continue
            key, _, value_text = line.partition(":")
            value_text = value_text[1:] if value_text.startswith(" ") else value_text
            if key == "event":
                name = value_text
            elif key == "data":
                data.append(value_text)
            elif key == "id":
                event_id = value_text


class KflowApi:
    """The kflow API (docs/API.md) through the API server's service proxy."""

    def __init__(self, connection: Connection, location: ApiLocation,
                 *, timeout: float = 30.0, direct_url: str | None = None) -> None:
        if not connection.token:
            raise CliError(
                f"kubeconfig user {connection.user!r} (context {connection.context!r}) signs in "
                "with a client certificate, and the kflow API needs a bearer token to ask the "
                "API server who you are (TokenReview): pass --token $(kubectl create token "
                "SERVICEACCOUNT -n NAMESPACE) or set KFLOW_TOKEN, or use a kubeconfig user with "
                "a token, tokenFile or exec plugin", EXIT_DENIED)
        self.connection = connection
        self.location = location
        self.timeout = timeout
        self.direct = bool(direct_url)
        if direct_url:  # a port-forward or an in-cluster caller: no proxy hop
            self.base = direct_url.rstrip("/")
            self.pool = urllib3.PoolManager(retries=False)
            return
        self.base = (f"{connection.host}/api/v1/namespaces/{quote(location.namespace, safe='')}"
                     f"/services/http:{quote(location.service, safe='')}:http/proxy")
        self.pool = urllib3.PoolManager(
            ca_certs=connection.ca_file,
            cert_file=connection.cert_file,
            key_file=connection.key_file,
            cert_reqs="CERT_REQUIRED" if connection.verify else "CERT_NONE",
            assert_hostname=connection.tls_server_name or None,
            server_hostname=connection.tls_server_name or None,
            retries=False,
        )
        if not connection.verify:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        params = {k: v for k, v in (query or {}).items() if v is not None}
        return self.base + path + (f"?{urlencode(params)}" if params else "")

    def headers(self) -> dict[str, str]:
        token = str(self.connection.token)
        hop = ({"Authorization": f"Bearer {token}"} if self.direct
               else self.connection.hop_headers())
        return {**hop, TOKEN_HEADER: token, "Accept": "application/json"}

    def request(self, method: str, path: str, query: Mapping[str, Any] | None = None, *,
                stream: bool = False, headers: Mapping[str, str] | None = None,
                timeout: float | None = None) -> urllib3.BaseHTTPResponse:
        try:
            response = self.pool.request(
                method, self.url(path, query), headers={**self.headers(), **(headers or {})},
                preload_content=not stream,
                timeout=urllib3.Timeout(connect=10, read=timeout or self.timeout),
            )
        except urllib3.exceptions.HTTPError as exc:
            where = (f"the kflow API at {self.base}" if self.direct else
                     f"the API server {self.connection.host} (context "
                     f"{self.connection.context!r})")
            raise CliError(f"cannot reach {where}: {exc}") from None
        if response.status >= 400:
            body = response.data if not stream else response.read()
            raise self._error(response.status, body)
        return response

    def _error(self, status: int, body: bytes) -> ApiError:
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and "error" in decoded:  # the kflow API's own answer
            return ApiError(status, str(decoded.get("reason") or ""), str(decoded["error"]))
        if self.direct:
            text = body.decode("utf-8", "replace").strip()[:300]
            return ApiError(status, "Error", f"the kflow API at {self.base}: HTTP {status}: "
                            f"{text}")
        # Otherwise the API server answered for the proxy hop (a Status object) or a proxy.
        message = (str(decoded.get("message")) if isinstance(decoded, dict)
                   else body.decode("utf-8", "replace").strip()[:300])
        where = f"the kflow API Service {self.location}"
        if status == 404:
            return ApiError(status, "NotFound", f"{where} was not found ({message}): install the "
                            "chart with server.enabled, or pass --api NAMESPACE/SERVICE or set "
                            "KFLOW_API (the chart names it <release>-api in the release's "
                            "namespace)")
        if status == 403:
            return ApiError(status, "Forbidden", f"the API server refuses you its proxy to "
                            f"{where} ({message}); the chart's server.proxyAccess=authenticated "
                            "lets every authenticated user through")
        if status == 401:
            return ApiError(status, "Unauthorized", "the API server does not accept the "
                            f"kubeconfig's credentials (context {self.connection.context!r}): "
                            f"{message}")
        if status == 503:
            return ApiError(status, "Unavailable", f"{where} answers nothing ({message}): is "
                            "its pod ready? (kubectl get pods -n "
                            f"{self.location.namespace})")
        return ApiError(status, "Error", f"{where}: HTTP {status}: {message}")

    def json(self, method: str, path: str, query: Mapping[str, Any] | None = None) -> Any:
        response = self.request(method, path, query)
        try:
            return json.loads(response.data)
        except ValueError:
            raise CliError(f"{self.location}: answered {path} with something that is not "
                           f"JSON: {response.data[:200]!r}") from None

    @staticmethod
    def flow_path(namespace: str, name: str | None = None) -> str:
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/flows"
        return path + (f"/{quote(name, safe='')}" if name is not None else "")

    def whoami(self) -> dict[str, Any]:
        return dict(self.json("GET", "/api/v1/whoami"))

    def list_flows(self, namespace: str, *, phase: str | None = None, q: str | None = None,
                   limit: int = 100, cont: str | None = None) -> dict[str, Any]:
        return dict(self.json("GET", self.flow_path(namespace),
                              {"phase": phase, "q": q, "limit": limit, "continue": cont}))

    def flow(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.json("GET", self.flow_path(namespace, name)))

    def nodes(self, namespace: str, name: str, *, state: str | None = None,
              q: str | None = None, limit: int = 500, cont: str | None = None) -> dict[str, Any]:
        return dict(self.json("GET", self.flow_path(namespace, name) + "/nodes",
                              {"state": state, "q": q, "limit": limit, "continue": cont}))

    def all_nodes(self, namespace: str, name: str, *, state: str | None = None,
                  limit: int = 5000, at_most: int | None = None) -> list[dict[str, Any]]:
        """Every node (of `state`), page after page; stops after `at_most` when given."""
        items: list[dict[str, Any]] = []
        cont: str | None = None
        while True:
            page = self.nodes(namespace, name, state=state, limit=limit, cont=cont)
            items.extend(page.get("items") or [])
            cont = page.get("continue")
            if not cont or (at_most is not None and len(items) >= at_most):
                return items if at_most is None else items[:at_most]

    def node(self, namespace: str, name: str, node: str) -> dict[str, Any]:
        return dict(self.json("GET", self.flow_path(namespace, name)
                              + f"/nodes/{quote(node, safe='')}"))

    def graph(self, namespace: str, name: str, *, collapse: int = 20) -> dict[str, Any]:
        return dict(self.json("GET", self.flow_path(namespace, name) + "/graph",
                              {"collapse": collapse}))

    def logs(self, namespace: str, name: str, *, node: str | None = None,
             attempt: int | None = None) -> str:
        response = self.request("GET", self.flow_path(namespace, name) + "/logs",
                                {"node": node, "attempt": attempt},
                                headers={"Accept": "text/plain"})
        return bytes(response.data).decode("utf-8", "replace")

    def events(self, namespace: str, name: str, *,
               last_event_id: str | None = None) -> Iterator[Event]:
        """The flow's server-sent events until the server closes the stream."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        # The server sends a keep-alive every 15 s: a minute of silence is a dead stream.
        response = self.request("GET", self.flow_path(namespace, name) + "/events",
                                stream=True, headers=headers, timeout=60)

        def chunks() -> Iterator[bytes]:
            try:
                while True:
                    data = response.read1(65536)
                    if not data:
                        return
                    yield bytes(data)
            finally:
                # Left at its `end` event (or interrupted), the stream may still owe bytes, at
                # least its closing chunk: that connection must never serve another request.
                response.close()
                response.release_conn()

        return parse_sse(chunks())

    def action(self, namespace: str, name: str, verb: str) -> dict[str, Any]:
        return dict(self.json("POST", self.flow_path(namespace, name) + f"/{verb}"))

    def delete(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.json("DELETE", self.flow_path(namespace, name)))
