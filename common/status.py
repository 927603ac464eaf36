"""Turns a typed ServiceError into the rich gRPC status callers decode: code, ErrorInfo, BadRequest."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from common.errors import InvalidArgument, ServiceError


def rich_status(error: ServiceError, domain: str) -> grpc.Status:
    """The gRPC status for `error`: code, message, ErrorInfo and, for bad fields, BadRequest."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata)
    details = [info]
    if isinstance(error, InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=name, description=problem)
                    for name, problem in error.fields.items()
                ]
            )
        )
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return rpc_status.to_status(
        status_pb2.Status(code=getattr(code_pb2, error.code), message=error.message, details=packed)
    )
