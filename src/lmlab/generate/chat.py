"""Chat prompts: a model's own chat template, rendered as transformers' ``apply_chat_template``.

    from lmlab.generate.chat import render_chat
    chat = render_chat("out/qwen/tokenizer", [{"role": "user", "content": "Hi"}])
    chat.text          # "<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n"
    chat.template      # "model" (the directory's template) | "plain" (no template: the fallback)
    chat.stop          # stop strings the prompt format needs ([] | ["\\nUser:"])

The template is the tokenizer directory's ``chat_template.jinja`` or, failing that, the
``chat_template`` of ``tokenizer_config.json``: a string, or a list of named templates
(``[{"name": ..., "template": ...}]``) of which "default" is used. It sees what transformers
gives it: ``messages``, ``add_generation_prompt``, ``tools`` and ``documents`` (None), and the
special tokens (``bos_token``, ``eos_token``, ``unk_token``, ``sep_token``, ``pad_token``,
``cls_token``, ``mask_token``) from tokenizer_config.json — or from special_tokens_map.json
when the config has no ``added_tokens_decoder``, as transformers reads them. The environment
is jinja2's ``ImmutableSandboxedEnvironment`` with ``trim_blocks`` and ``lstrip_blocks``,
the ``loopcontrols`` extension and the ``{% generation %}`` tag, ``raise_exception``,
``strftime_now``, a JSON ``tojson`` that escapes no HTML, and a ``namespace`` that refuses
names starting with "_". One difference, on purpose: reaching an unsafe attribute
(``''.__class__``) is an error at once, where jinja2 would render an empty string until the
attribute is used.

A directory without a template gets the plain convention, ``System: …`` / ``User: …`` /
``Assistant: …`` lines ending in ``Assistant:``, with ``"\\nUser:"`` as a stop string; it is
not what the model was trained on, and `Chat.template` says so ("plain").
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lmlab.errors import ArtifactError, ConfigError, UnsafeFormat

SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}
PLAIN_STOP = "\nUser:"


@dataclass
class Chat:
    text: str  # the prompt to continue
    template: str  # "model": the directory's chat template; "plain": the fallback convention
    stop: list[str] = field(default_factory=list)  # stop strings this prompt format needs


@dataclass(frozen=True)
class ChatTemplate:
    source: str | None  # the Jinja text; None = no template (plain fallback)
    special_tokens: tuple[tuple[str, str], ...]  # (name, token) pairs the template sees
    where: str  # the file it came from, for error messages

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> Chat:
        messages = _check_messages(messages)
        if self.source is None:
            return Chat(plain_prompt(messages, add_generation_prompt), "plain", [PLAIN_STOP])
        jinja2 = _jinja2()

        try:
            text = _compile(self.source).render(messages=messages, tools=None, documents=None,
                                                add_generation_prompt=add_generation_prompt,
                                                **dict(self.special_tokens))
        except jinja2.exceptions.SecurityError as e:
            raise UnsafeFormat(f"{self.where}: the chat template tried to reach Python internals ({e}); "
                               "lmlab refuses to render it") from None
        except jinja2.exceptions.TemplateError as e:  # raise_exception(...) and undefined values
            raise ConfigError(f"messages: the chat template of {self.where} refused them: {e}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as e:
            raise ConfigError(f"messages: the chat template of {self.where} failed on them "
                              f"({type(e).__name__}: {e})") from None
        return Chat(text, "model", [])


def plain_prompt(messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
    """``System: …`` / ``User: …`` / ``Assistant: …`` lines (+ ``Assistant:``)."""
    lines = [f"{ROLE_NAMES.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in messages]
    return "\n".join(lines + (["Assistant:"] if add_generation_prompt else []))


def render_chat(tokenizer_dir: str | Path, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> Chat:
    """The conversation as a prompt, with the directory's template or the plain fallback."""
    return load_chat_template(tokenizer_dir).render(messages, add_generation_prompt)


def load_chat_template(tokenizer_dir: str | Path) -> ChatTemplate:
    """The chat template of a tokenizer directory (see the module docstring). The files are read
    at each call (a few kilobytes); the compiled template is cached by its text."""
    directory = Path(tokenizer_dir)
    config_path = directory / "tokenizer_config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    tokens = {k: _token_text(config.get(k), config_path, k) for k in SPECIAL_TOKENS}
    map_path = directory / "special_tokens_map.json"
    if "added_tokens_decoder" not in config and map_path.is_file():  # transformers' legacy merge
        special_map = _read_json(map_path)
        tokens.update({k: _token_text(special_map[k], map_path, k) for k in SPECIAL_TOKENS if k in special_map})
    special = tuple((k, v) for k, v in tokens.items() if v is not None)

    jinja_path = directory / "chat_template.jinja"
    if jinja_path.is_file():
        return ChatTemplate(_checked(jinja_path.read_text(encoding="utf-8"), jinja_path), special, str(jinja_path))
    template = config.get("chat_template")
    where = f"{config_path} (chat_template)"
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        if "default" not in named:
            raise ConfigError(f"{where}: a list of templates without one named 'default' "
                              f"(names: {', '.join(map(str, named))})")
        template = named["default"]
    if template is not None and not isinstance(template, str):
        raise ConfigError(f"{where}: must be a string or a list of {{name, template}}, got {type(template).__name__}")
    return ChatTemplate(_checked(template, where) if template else None, special, where)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    return data


def _token_text(value: Any, path: Path, key: str) -> str | None:
    """A special token as tokenizer files store it: a string, or an AddedToken {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    if value is not None and not isinstance(value, str):
        raise ArtifactError(f"{path}: {key} must be a string or {{\"content\": ...}}, got {value!r}")
    return value


def _checked(source: str, where: Any) -> str:
    """The template, compiled once here so that a syntax error names the file and line."""
    jinja2 = _jinja2()

    try:
        _compile(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ConfigError(f"{where}: line {e.lineno}: the chat template is not valid Jinja ({e.message})") from None
    return source


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise ConfigError("messages: give a non-empty list of {role, content} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ConfigError(f"messages[{i}]: must be an object with string 'role' and 'content', got {m!r}")
        out.append({k: v for k, v in m.items() if v is not None})  # as transformers: None = absent
    return out


# -- the environment -----------------------------------------------------------------------------

def _jinja2():
    """jinja2, at a version without the known sandbox escapes (as transformers requires)."""
    try:
        import jinja2
    except ImportError:
        raise ConfigError("rendering a model's chat template needs jinja2: pip install 'lmlab[chat]'") from None
    if tuple(int(x) for x in jinja2.__version__.split(".")[:3] if x.isdigit()) < (3, 1, 6):
        raise ConfigError(f"jinja2 {jinja2.__version__} has known sandbox escapes; chat templates need jinja2>=3.1.6 "
                          "(pip install -U 'lmlab[chat]')")
    return jinja2


@functools.lru_cache(maxsize=16)
def _compile(source: str):
    _jinja2()
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Sandbox(ImmutableSandboxedEnvironment):
        def unsafe_undefined(self, obj: Any, attribute: str):
            raise jinja2.exceptions.SecurityError(f"access to attribute {attribute!r} of a "
                                                  f"{type(obj).__name__!r} object is unsafe")

    class Generation(jinja2.ext.Extension):
        """``{% generation %}…{% endgeneration %}`` (marks assistant text for training masks): the body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        """jinja2's namespace, refusing names that start with "_" (no way to CPython internals)."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} starts with '_'")

    class Dict:
        """``dict(...)`` and ``dict.fromkeys(...)``, without the type itself."""

        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: datetime.now().strftime(fmt),
                       dict=Dict(), namespace=Namespace)
    return env.from_string(source)
