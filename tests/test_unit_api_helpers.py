"""Unit tests of the request helpers the API views share (arcext.api.base): machine_path, require_location and
ArmBlueprint.long_running."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.views import MethodView

from arcext.api.base import ArmApi, ArmBlueprint, machine_path, require_location
from arcext.errors import ArmError
from arcext.ids import MachineKey
from arcext.schemas.extension import MachineExtensionSchema

SUB = "00000000-0000-0000-0000-0000000000AB"


def test_machine_path_hands_the_view_one_key_and_the_other_arguments() -> None:
    seen: dict[str, Any] = {}

    @machine_path
    def view(query: dict[str, Any], key: MachineKey, extension_name: str) -> str:
        """The docstring flask-smorest documents."""
        seen.update(query=query, key=key, extension_name=extension_name)
        return "answer"

    answer = view(
        {"api_version": "x"}, subscription_id=SUB, resource_group="RG1", machine_name="m1", extension_name="e"
    )
    assert answer == "answer"
    assert seen == {
        "query": {"api_version": "x"},
        "key": MachineKey(SUB.lower(), "RG1", "m1"),
        "extension_name": "e",
    }
    assert view.__doc__ == "The docstring flask-smorest documents."


def test_machine_path_refuses_a_bad_segment_before_the_view_runs() -> None:
    ran: list[bool] = []

    @machine_path
    def view(key: MachineKey) -> None:
        ran.append(True)

    with pytest.raises(ArmError) as caught:
        view(subscription_id="not-a-subscription", resource_group="rg1", machine_name="m1")
    assert caught.value.status == 400
    assert ran == []


@pytest.mark.parametrize("body", [{}, {"location": ""}, {"location": None}])
def test_require_location_refuses_a_body_without_one(body: dict[str, Any]) -> None:
    with pytest.raises(ArmError) as caught:
        require_location(body)
    assert (caught.value.status, caught.value.code) == (400, "LocationRequired")


def test_require_location_accepts_a_named_location() -> None:
    require_location({"location": "eastus"})


def test_long_running_documents_the_202_and_the_answers_it_is_given() -> None:
    app = Flask(__name__)
    app.config.update(API_TITLE="t", API_VERSION="1", OPENAPI_VERSION="3.0.3")
    api = ArmApi(app)
    blp = ArmBlueprint("lro", __name__)

    @blp.route("/things/<name>")
    class Thing(MethodView):
        @blp.long_running("the thing is then Succeeded", never_sent=MachineExtensionSchema)
        def put(self, name: str) -> Any:
            return None

        @blp.long_running(no_such="There was no such thing")
        def delete(self, name: str) -> Any:
            return None

    api.register_blueprint(blp)
    paths = api.spec.to_dict()["paths"]["/things/{name}"]
    put, delete = paths["put"]["responses"], paths["delete"]["responses"]
    assert put["202"]["description"] == "Accepted: poll Azure-AsyncOperation; the thing is then Succeeded"
    assert put["200"]["description"] == "Never sent by arcext; allowed by the spec"
    assert "204" not in put
    assert delete["202"]["description"] == "Accepted: poll Azure-AsyncOperation"
    assert delete["204"]["description"] == "There was no such thing"
    assert "200" not in delete
