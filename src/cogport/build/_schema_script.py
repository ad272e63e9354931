"""Introspect a Cog model and write its OpenAPI schema. Runs *inside the model's venv*, not in cogport.

Usage (cwd = the model directory)::

    python _schema_script.py --result out.json [--predict predict.py:Predictor] [--train train.py:train]

It imports the predictor like coglet does, asks ``cog._inspector`` (the SDK's own introspection) for the
inputs and output, and lays them out as Cog's Go generator does (``pkg/schema/openapi.go``): ``Input`` /
``Output`` (and ``TrainingInput`` / ``TrainingOutput``) components, enum components for ``choices``,
``PredictionRequest`` / ``PredictionResponse``, and the ``/predictions`` and ``/trainings`` paths.

The result file holds ``{"schema", "streams", "concurrency", "cog_version", "python_version", "warnings"}``,
or ``{"error": "..."}`` with exit status 2 when the model is at fault. ``x-cog-streaming`` is left to the
caller, which decides per copy (see :mod:`cogport.build.schema`).

Only the standard library and ``cog`` may be imported here, and the code must run on Python 3.10.
"""

from __future__ import annotations

import argparse
import ast
import enum
import importlib.util
import inspect
import json
import os
import platform
import sys
import textwrap
import traceback
import typing
import warnings
from typing import Any

STATUS_ENUM = ["starting", "processing", "succeeded", "canceled", "failed"]
RESERVED_COMPONENTS = {
    "Input",
    "Output",
    "TrainingInput",
    "TrainingOutput",
    "PredictionRequest",
    "PredictionResponse",
    "TrainingRequest",
    "TrainingResponse",
    "Status",
    "HTTPValidationError",
    "ValidationError",
}


class ModelError(Exception):
    """Something wrong with the model itself; the message is shown to the user as is."""


# ---------------------------------------------------------------------------------------------- loading


def load_module(path: str, kind: str) -> tuple[str, Any]:
    if not path.endswith(".py"):
        raise ModelError(f"the {kind} reference must name a .py file, got {path!r}")
    if not os.path.isfile(path):
        raise ModelError(f"{path} (named by {kind} in cog.yaml) does not exist in the model directory")
    module_name = os.path.splitext(os.path.basename(path))[0]
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in sys.path:
        sys.path.insert(0, directory)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        where = f"{os.path.relpath(exc.filename or path)}, line {exc.lineno}"
        text = f"\n    {exc.text.rstrip()}" if exc.text else ""
        raise ModelError(f"syntax error in {where}: {exc.msg}{text}") from None
    except ModuleNotFoundError as exc:
        raise ModelError(
            f"importing {path} failed: no module named {exc.name!r}. Add the package that provides it to "
            f"build.python_packages or build.python_requirements in cog.yaml.\n{short_traceback()}"
        ) from None
    except Exception as exc:
        raise ModelError(f"importing {path} failed: {type(exc).__name__}: {exc}\n{short_traceback()}") from None
    return module_name, module


def short_traceback() -> str:
    """The current exception with the model's frames only (not this script's or importlib's)."""
    exc_type, exc, tb = sys.exc_info()
    frames = [
        frame
        for frame in traceback.extract_tb(tb)
        if os.path.abspath(frame.filename) != os.path.abspath(__file__) and "importlib" not in frame.filename
    ]
    lines = traceback.format_list(frames[-6:]) + traceback.format_exception_only(exc_type, exc)
    return "".join(lines).rstrip()


def find_object(module: Any, module_path: str, name: str, kind: str) -> Any:
    if hasattr(module, name):
        return getattr(module, name)
    defined = sorted(
        key
        for key, value in vars(module).items()
        if (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == module.__name__
        and not key.startswith("_")
    )
    hint = f" (it defines: {', '.join(defined)})" if defined else ""
    raise ModelError(f"{module_path} has no {name!r}, named by {kind} in cog.yaml{hint}")


def user_method(cls: type, names: tuple[str, ...]) -> Any:
    """The first of ``names`` that the class (not cog's base classes) defines."""
    for klass in inspect.getmro(cls):
        if getattr(klass, "__module__", "").split(".")[0] == "cog":
            continue
        for name in names:
            if name in vars(klass):
                return getattr(cls, name)
    return None


# ---------------------------------------------------------------------------------------------- source facts


def function_node(fn: Any) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return node
    return None


def explicit_none_defaults(node: ast.FunctionDef | ast.AsyncFunctionDef | None) -> set[str]:
    """Parameters whose default is written ``None`` or ``Input(default=None, ...)``.

    ``cog._inspector`` cannot tell ``Input(default=None)`` from ``Input()``; the source can.
    """
    if node is None:
        return set()
    args = node.args.args
    defaults = node.args.defaults
    names: set[str] = set()
    for arg, default in zip(args[len(args) - len(defaults) :], defaults, strict=False):
        if is_none(default):
            names.add(arg.arg)
        elif isinstance(default, ast.Call) and call_name(default.func) == "Input":
            if default.args and is_none(default.args[0]):
                names.add(arg.arg)
            for keyword in default.keywords:
                if keyword.arg == "default" and is_none(keyword.value):
                    names.add(arg.arg)
    return names


def is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def call_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def has_streaming_decorator(node: ast.FunctionDef | ast.AsyncFunctionDef | None) -> bool:
    if node is None:
        return False
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if call_name(target) == "streaming":
            return True
    return False


# ---------------------------------------------------------------------------------------------- schema


def to_json(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    return str(value)


def number(value: float) -> int | float:
    """Go marshals a float64 ``1`` as ``1``; do the same."""
    return int(value) if float(value).is_integer() else value


def title_case(name: str) -> str:
    return " ".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or name


class Inputs:
    """One ``Input``/``TrainingInput`` component plus its enum components."""

    def __init__(self, info: Any, fn: Any, adt: Any) -> None:
        self.info = info
        self.fn = fn
        self.adt = adt
        self.enums: dict[str, dict[str, Any]] = {}

    def component(self, title: str, taken: dict[str, Any]) -> dict[str, Any]:
        node = function_node(self.fn)
        explicit_none = explicit_none_defaults(node)
        raw = raw_defaults(self.fn)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for name, field in sorted(self.info.inputs.items(), key=lambda item: item[1].order):
            prop, is_required = self.property(name, field, name in explicit_none, raw.get(name), taken)
            properties[name] = prop
            if is_required:
                required.append(name)
        schema: dict[str, Any] = {"title": title, "type": "object", "properties": properties}
        if required:
            schema["required"] = required
        return schema

    def property(
        self, name: str, field: Any, none_default: bool, raw: Any, taken: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        adt = self.adt
        ftype = field.type
        prop: dict[str, Any] = {"x-order": field.order}
        if field.choices:
            base = ftype.primitive.json_type()
            enum_schema = {
                "title": name,
                "description": "An enumeration.",
                "enum": [to_json(choice) for choice in field.choices],
                "type": base.get("type", "string"),
            }
            enum_name = self.enum_name(name, enum_schema, taken)
            prop["allOf"] = [{"$ref": f"#/components/schemas/{enum_name}"}]
        else:
            prop["title"] = title_case(name)
            prop.update(ftype.json_type())
        optional_reps = {adt.Repetition.OPTIONAL, getattr(adt.Repetition, "OPTIONAL_REPEATED", None)}
        nullable = ftype.repetition in optional_reps
        if ftype.primitive is adt.PrimitiveType.SECRET and ftype.repetition is adt.Repetition.REQUIRED and none_default:
            nullable = True  # `api_key: Secret = Input(default=None)`: an optional credential, as in Go
        has_default = field.default is not None and not isinstance(field.default, _dataclass_field_type())
        if has_default:
            prop["default"] = to_json(field.default)
        # `seed: int = Input(default=None)` is optional (the pydantic-era meaning many models rely on).
        is_required = not has_default and not nullable and not none_default
        if nullable:
            prop["nullable"] = True
        if field.description is not None:
            prop["description"] = field.description
        if field.ge is not None:
            prop["minimum"] = number(field.ge)
        if field.le is not None:
            prop["maximum"] = number(field.le)
        if field.min_length is not None:
            prop["minLength"] = field.min_length
        if field.max_length is not None:
            prop["maxLength"] = field.max_length
        if field.regex is not None:
            prop["pattern"] = field.regex
        if field.deprecated:
            prop["deprecated"] = True
        accept = getattr(raw, "accept", None)
        if accept:
            prop["x-cog-accept"] = accept
        return prop, is_required

    def enum_name(self, name: str, schema: dict[str, Any], taken: dict[str, Any]) -> str:
        candidate = name
        suffix = 1
        while candidate in RESERVED_COMPONENTS or (candidate in taken and taken[candidate] != schema):
            suffix += 1
            candidate = f"{name}{suffix}"
        taken[candidate] = schema
        self.enums[candidate] = schema
        return candidate


def _dataclass_field_type() -> type:
    import dataclasses

    return dataclasses.Field


def raw_defaults(fn: Any) -> dict[str, Any]:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}


def output_component(info: Any, title: str) -> dict[str, Any]:
    schema = dict(info.output.json_type())
    schema["title"] = title
    return schema


def streams(info: Any, adt: Any, node: ast.FunctionDef | ast.AsyncFunctionDef | None) -> bool:
    kind = info.output.kind
    return kind in (adt.OutputKind.ITERATOR, adt.OutputKind.CONCAT_ITERATOR) or has_streaming_decorator(node)


def request_component(name: str, input_ref: str) -> dict[str, Any]:
    return {
        "title": name,
        "type": "object",
        "properties": {"id": {"title": "Id", "type": "string"}, "input": {"$ref": input_ref}},
    }


def response_component(name: str, input_ref: str, output_ref: str) -> dict[str, Any]:
    return {
        "title": name,
        "type": "object",
        "properties": {
            "input": {"$ref": input_ref},
            "output": {"$ref": output_ref},
            "id": {"title": "Id", "type": "string"},
            "version": {"title": "Version", "type": "string"},
            "created_at": {"title": "Created At", "type": "string", "format": "date-time"},
            "started_at": {"title": "Started At", "type": "string", "format": "date-time"},
            "completed_at": {"title": "Completed At", "type": "string", "format": "date-time"},
            "status": {"title": "Status", "type": "string"},
            "error": {"title": "Error", "type": "string"},
            "logs": {"title": "Logs", "type": "string"},
            "metrics": {"title": "Metrics", "type": "object"},
        },
    }


def ok_response(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "Successful Response", "content": {"application/json": {"schema": schema}}}


VALIDATION_ERROR_RESPONSE = {
    "description": "Validation Error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
}


def run_paths(endpoint: str, mode: str, request: str, response: str) -> dict[str, Any]:
    noun = "prediction" if mode == "predict" else "training"
    summary = "Predict" if mode == "predict" else "Train"
    operation_id = "predict_predictions_post" if mode == "predict" else "train_trainings_post"
    return {
        endpoint: {
            "post": {
                "summary": summary,
                "description": f"Run a single {noun} on the model",
                "operationId": operation_id,
                "requestBody": {
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}}
                },
                "responses": {
                    "200": ok_response({"$ref": f"#/components/schemas/{response}"}),
                    "422": VALIDATION_ERROR_RESPONSE,
                },
            }
        },
        f"{endpoint}/{{{noun}_id}}/cancel": {
            "post": {
                "summary": "Cancel",
                "operationId": f"cancel_{endpoint.strip('/')}__{noun}_id__cancel_post",
                "parameters": [
                    {
                        "required": True,
                        "schema": {"title": title_case(f"{noun}_id"), "type": "string"},
                        "name": f"{noun}_id",
                        "in": "path",
                    }
                ],
                "responses": {"200": ok_response({}), "422": VALIDATION_ERROR_RESPONSE},
            }
        },
    }


def document(parts: dict[str, tuple[Any, Any]], adt: Any) -> dict[str, Any]:
    """``parts`` maps ``predict``/``train`` to ``(PredictorInfo, function)``."""
    components: dict[str, Any] = {}
    enums: dict[str, Any] = {}
    paths: dict[str, Any] = {
        "/": {"get": {"summary": "Root", "operationId": "root__get", "responses": {"200": ok_response({})}}},
        "/health-check": {
            "get": {
                "summary": "Healthcheck",
                "operationId": "healthcheck_health_check_get",
                "responses": {"200": ok_response({})},
            }
        },
    }
    names = {
        "predict": ("Input", "Output", "PredictionRequest", "PredictionResponse", "/predictions"),
        "train": ("TrainingInput", "TrainingOutput", "TrainingRequest", "TrainingResponse", "/trainings"),
    }
    for mode in ("predict", "train"):
        if mode not in parts:
            continue
        info, fn = parts[mode]
        input_name, output_name, request, response, endpoint = names[mode]
        inputs = Inputs(info, fn, adt)
        components[input_name] = inputs.component(input_name, enums)
        components[output_name] = output_component(info, output_name)
        components.update(inputs.enums)
        input_ref = f"#/components/schemas/{input_name}"
        components[request] = request_component(request, input_ref)
        components[response] = response_component(response, input_ref, f"#/components/schemas/{output_name}")
        paths.update(run_paths(endpoint, mode, request, response))
    components["Status"] = {
        "title": "Status",
        "description": "An enumeration.",
        "enum": STATUS_ENUM,
        "type": "string",
    }
    components["HTTPValidationError"] = {
        "title": "HTTPValidationError",
        "type": "object",
        "properties": {
            "detail": {"title": "Detail", "type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}}
        },
    }
    components["ValidationError"] = {
        "title": "ValidationError",
        "required": ["loc", "msg", "type"],
        "type": "object",
        "properties": {
            "loc": {
                "title": "Location",
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            },
            "msg": {"title": "Message", "type": "string"},
            "type": {"title": "Error Type", "type": "string"},
        },
    }
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": paths,
        "components": {"schemas": components},
    }


# ---------------------------------------------------------------------------------------------- main


def inspect_ref(ref: str, kind: str, inspector: Any) -> tuple[Any, Any, Any]:
    """``(PredictorInfo, run function, class or None)`` for ``path.py:Name``."""
    path, _, name = ref.partition(":")
    if not name:
        raise ModelError(f"{kind} in cog.yaml must look like 'predict.py:Predictor', got {ref!r}")
    module_name, module = load_module(path, kind)
    target = find_object(module, path, name, kind)
    if inspect.isclass(target):
        fn = user_method(target, ("run", "predict") if kind != "train" else ("train", "run", "predict"))
    elif inspect.isfunction(target):
        fn = target
    else:
        raise ModelError(f"{ref} ({kind} in cog.yaml) is neither a class nor a function")
    try:
        info = inspector.create_predictor(module_name, name)
    except ModelError:
        raise
    except Exception as exc:
        culprit = bad_default(fn, inspector) if "failed to normalize value" in str(exc) else None
        raise ModelError(f"{ref} ({kind} in cog.yaml): {culprit or exc}") from None
    return info, fn, target


def bad_default(fn: Any, inspector: Any) -> str | None:
    """Which input's default does not fit its type, and how to fix it (cog's own error names neither:
    "failed to normalize value as str"). cog 0.16 took such defaults (``filepath: str = Path(...)``)."""
    create = getattr(inspector, "_create_input_field", None)
    if create is None:
        return None
    function = inspector._unwrap(fn) if hasattr(inspector, "_unwrap") else fn
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception:
        hints = getattr(function, "__annotations__", {})
    parameters = [p for p in inspect.signature(function).parameters.values() if p.name != "self"]
    for order, parameter in enumerate(parameters):
        if parameter.default is inspect.Parameter.empty or parameter.name not in hints:
            continue
        try:
            create(order, parameter.name, hints[parameter.name], parameter.default)
        except (TypeError, ValueError) as exc:
            if "failed to normalize value" not in str(exc):
                continue
            default = getattr(parameter.default, "default", parameter.default)
            wanted = str(exc).rsplit(" as ", 1)[-1]
            if wanted == "str" and isinstance(default, os.PathLike):
                fix = f"write it as a str: `{parameter.name}: str = {json.dumps(os.fspath(default))}`"
            else:
                fix = f"give it a default of type {wanted}, or change the input's type"
            return (
                f"the default of input {parameter.name!r}, {default!r}, is not of type {wanted} "
                f"(cog 0.17 and newer check defaults against the input's type; cog 0.16 did not): {fix}"
            )
    return None


def concurrency_of(fn: Any) -> int | None:
    value = getattr(fn, "__cog_concurrent_max__", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def inspect_model(predict: str | None, train: str | None) -> dict[str, Any]:
    try:
        from cog import _adt as adt  # type: ignore[import-not-found]
        from cog import _inspector as inspector
    except ImportError as exc:
        raise ModelError(f"this cog SDK has no cog._inspector ({exc}); use sdk_version 0.17 or newer") from None
    parts: dict[str, tuple[Any, Any]] = {}
    result: dict[str, Any] = {"streams": {}, "concurrency": None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for kind, ref in (("predict", predict), ("train", train)):
            if not ref:
                continue
            info, fn, _ = inspect_ref(ref, kind, inspector)
            original = inspector._unwrap(fn) if hasattr(inspector, "_unwrap") else fn
            parts[kind] = (info, original)
            result["streams"][kind] = streams(info, adt, function_node(original))
            if kind == "predict":
                result["concurrency"] = concurrency_of(fn) or concurrency_of(original)
                result["is_async"] = inspect.iscoroutinefunction(original) or inspect.isasyncgenfunction(original)
        result["schema"] = document(parts, adt)
    result["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    result["cog_version"] = sdk_version()
    result["python_version"] = platform.python_version()
    return result


def sdk_version() -> str:
    try:
        from importlib.metadata import version

        return version("cog")
    except Exception:
        import cog

        return str(getattr(cog, "__version__", ""))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--result", required=True)
    parser.add_argument("--predict")
    parser.add_argument("--train")
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())
    try:
        result = inspect_model(args.predict, args.train)
        status = 0
    except ModelError as exc:
        result, status = {"error": str(exc)}, 2
    except BaseException as exc:  # report anything, including SystemExit from a model
        result, status = {"error": f"inspecting the model failed: {type(exc).__name__}: {exc}\n{short_traceback()}"}, 2
    with open(args.result, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    return status


if __name__ == "__main__":
    sys.exit(main())
