"""The WS-Management vocabulary of the fake Windows host: namespaces, action and resource URIs, the
request as the dispatcher parsed it, the response and fault envelopes, and the SOAP faults real
Windows sends (their shapes follow the transcripts in tests/data/pypsrp-recordings).

Both shell resources (:mod:`.psrp` for PowerShell runspace pools, :mod:`.winrs` for cmd shells)
and the HTTP side (:mod:`.wsman`) speak it; it imports none of them.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmv": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "pwsh": "http://schemas.microsoft.com/powershell",
}
ACTION = {
    "Create": "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create",
    "Delete": "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete",
    "Get": "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get",
    "Command": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command",
    "Send": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send",
    "Receive": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive",
    "Signal": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal",
}
ACTION_NAMES = {v: k for k, v in ACTION.items()}
#: the response action of each request action
RESPONSE = {
    "Create": "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse",
    "Delete": "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse",
    "Get": "http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse",
    "Command": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse",
    "Send": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse",
    "Receive": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse",
    "Signal": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse",
}
PS_RESOURCE_PREFIX = "http://schemas.microsoft.com/powershell/"
SHELL_RESOURCE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
CMD_RESOURCE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
CONFIG_RESOURCE = "http://schemas.microsoft.com/wbem/wsman/1/config"
DONE = f"{SHELL_RESOURCE}/CommandState/Done"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"

ENVELOPE_NS = (
    'xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
    'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
    'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" '
    'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"'
)
FAULT_NS = (
    'xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
    'xmlns:e="http://schemas.xmlsoap.org/ws/2004/08/eventing" '
    'xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" '
    'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
    'xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"'
)

TIMED_OUT = 2150858793
SHELL_NOT_FOUND = 2150858843
ACTION_NOT_SUPPORTED = 2150858771
INVALID_HEADER = 2150858767
UNSUPPORTED_RESOURCE = 2150858811
INTERNAL_ERROR = 2147943860
INVALID_VALUE_DETAIL = "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidValue"


# --- faults --------------------------------------------------------------------------------------
class Fault(Exception):
    """A SOAP fault the host answers with (HTTP 500)."""

    def __init__(self, code: str, subcode: str, reason: str, wsman_code: int, detail: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.subcode = subcode
        self.reason = reason
        self.wsman_code = wsman_code
        self.detail = detail


def invalid_parameter(detail: str | None = None) -> Fault:
    """ERROR_INVALID_PARAMETER (87): a body the shell resource cannot use."""
    return Fault("s:Sender", "w:InvalidParameter", "The parameter is incorrect. ", 87, detail)


def timed_out() -> Fault:
    msg = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  "
    return Fault("s:Receiver", "w:TimedOut", msg, TIMED_OUT)


def shell_not_found(command: bool = False) -> Fault:
    """An unknown (or deleted) shell, or with ``command`` an unknown command of a live shell: real
    Windows answers both with the same InvalidSelectors fault."""
    reason = (
        "The WS-Management service cannot process the request because the request contained invalid selectors "
        "for the resource. "
    )
    return Fault(
        "s:Sender",
        "w:InvalidSelectors",
        reason,
        SHELL_NOT_FOUND,
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
    )


def action_not_supported(action: str) -> Fault:
    return Fault(
        "s:Sender",
        "a:ActionNotSupported",
        f"The action is not supported by the service. {action} ",
        ACTION_NOT_SUPPORTED,
    )


def access_denied() -> Fault:
    return Fault("s:Sender", "w:AccessDenied", "Access is denied. ", 5)


def internal_error() -> Fault:
    return Fault(
        "s:Receiver",
        "w:InternalError",
        "The WS-Management service cannot process the request: an internal error occurred. ",
        INTERNAL_ERROR,
    )


def unsupported_resource(resource_uri: str) -> Fault:
    return Fault(
        "s:Sender",
        "w:InvalidParameter",
        f"The WS-Management service cannot process the request. The resource URI {resource_uri} is not "
        "supported by this fake host. ",
        UNSUPPORTED_RESOURCE,
    )


def parse_timeout(text: str | None) -> float:
    """The seconds of ``wsman:OperationTimeout`` (``PT20S``); 60 when it is absent."""
    if not text:
        return 60.0
    m = re.match(r"^PT(\d+(?:\.\d+)?)S$", text.strip())
    if not m:
        raise Fault(
            "s:Sender",
            "a:InvalidMessageInformationHeader",
            "The WS-Management service cannot process the request. The request contains one or more invalid SOAP "
            "headers. ",
            INVALID_HEADER,
        )
    return float(m.group(1))


# --- requests ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Envelope:
    """The parts of a request envelope read before anything can fail with a SOAP fault."""

    action_uri: str
    action: str  # the short name (Create, Command, ...), or the last segment of an unknown action
    message_id: str
    resource_uri: str
    header: ET.Element
    body: ET.Element


def read_envelope(data: bytes) -> Envelope:
    """Parse a request; a body that is not a SOAP envelope raises ValueError."""
    root = ET.fromstring(data)
    header = root.find("s:Header", NS)
    body = root.find("s:Body", NS)
    if header is None or body is None:
        raise ValueError("not a SOAP envelope")
    action_uri = (header.findtext("wsa:Action", "", NS) or "").strip()
    return Envelope(
        action_uri=action_uri,
        action=ACTION_NAMES.get(action_uri, action_uri.rsplit("/", 1)[-1]),
        message_id=(header.findtext("wsa:MessageID", "", NS) or "").strip(),
        resource_uri=(header.findtext("wsman:ResourceURI", "", NS) or "").strip(),
        header=header,
        body=body,
    )


@dataclass(frozen=True)
class Request:
    """One WS-Management request to a shell resource, as the dispatcher parsed it."""

    client_ip: str
    resource_uri: str
    body: ET.Element
    selectors: dict[str, str]
    options: dict[str, str]
    timeout: float
    to: str

    @classmethod
    def parse(cls, envelope: Envelope, client_ip: str) -> Request:
        """Selectors, options, OperationTimeout (an invalid one is a fault) and To of ``envelope``."""
        header = envelope.header
        return cls(
            client_ip=client_ip,
            resource_uri=envelope.resource_uri,
            body=envelope.body,
            selectors={
                s.get("Name", ""): (s.text or "").strip()
                for s in header.findall("wsman:SelectorSet/wsman:Selector", NS)
            },
            options={
                o.get("Name", ""): (o.text or "").strip() for o in header.findall("wsman:OptionSet/wsman:Option", NS)
            },
            timeout=parse_timeout(header.findtext("wsman:OperationTimeout", None, NS)),
            to=(header.findtext("wsa:To", "", NS) or "").strip(),
        )

    @property
    def shell_id(self) -> str:
        return self.selectors.get("ShellId", "").upper()


# --- responses -----------------------------------------------------------------------------------
def _activity_id(activity: bool) -> str:
    # p:ActivityId: always in the PSRP transcripts, in only some of the WinRS ones (never in SendResponse)
    return f"<p:ActivityId>{str(uuid.uuid4()).upper()}</p:ActivityId>" if activity else ""


def response_envelope(action: str, relates_to: str, body: str, activity: bool = True) -> str:
    return (
        f"<s:Envelope {ENVELOPE_NS}><s:Header><a:Action>{action}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>{_activity_id(activity)}"
        f"<a:To>{ANONYMOUS}</a:To><a:RelatesTo>{escape(relates_to)}</a:RelatesTo></s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    )


def fault_envelope(relates_to: str, f: Fault, machine: str, activity: bool = True) -> str:
    detail = f"<w:FaultDetail>{f.detail}</w:FaultDetail>" if f.detail else ""
    return (
        f"<s:Envelope {FAULT_NS}><s:Header><a:Action>http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        f"{_activity_id(activity)}<a:To>{ANONYMOUS}</a:To>"
        f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo></s:Header><s:Body><s:Fault><s:Code>"
        f"<s:Value>{f.code}</s:Value><s:Subcode><s:Value>{f.subcode}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(f.reason)}</s:Text></s:Reason><s:Detail>{detail}'
        f'<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="{f.wsman_code}" '
        f'Machine="{escape(machine)}"><f:Message>{escape(f.reason)}</f:Message></f:WSManFault>'
        f"</s:Detail></s:Fault></s:Body></s:Envelope>"
    )


def resource_created(address: str, resource_uri: str, shell_id: str) -> str:
    """The ``x:ResourceCreated`` part of a CreateResponse (the new shell's endpoint reference)."""
    return (
        f"<x:ResourceCreated><a:Address>{escape(address)}</a:Address><a:ReferenceParameters>"
        f"<w:ResourceURI>{escape(resource_uri)}</w:ResourceURI><w:SelectorSet>"
        f'<w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet></a:ReferenceParameters>'
        f"</x:ResourceCreated>"
    )
