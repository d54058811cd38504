"""Which answers of JetStream stream setup are waited out (a cluster forming or missing a node)
and which are real errors that must stop the role."""

from __future__ import annotations

import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import (
    APIError,
    BadRequestError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)

from common.streams import is_transient


@pytest.mark.parametrize("exc", [
    BadRequestError(code=400, err_code=10005, description="no suitable peers for placement, peer offline"),
    APIError(code=503, err_code=10008, description="JetStream system temporarily unavailable"),
    ServiceUnavailableError(code=503, description="JetStream not ready"),
    NotFoundError(code=404, err_code=10059, description="stream not found"),
    NoRespondersError(),
    NoStreamResponseError(),
    NatsTimeoutError(),
    TimeoutError(),
])
def test_a_cluster_that_is_not_ready_yet_is_waited_out(exc: Exception) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    BadRequestError(code=400, err_code=10052, description="invalid stream config"),
    BadRequestError(code=400, err_code=10058, description="stream name already in use with a different configuration"),
    APIError(code=500, err_code=10049, description="insufficient storage resources"),
    ValueError("not a bus error"),
])
def test_a_wrong_configuration_is_not_retried(exc: Exception) -> None:
    assert not is_transient(exc)
