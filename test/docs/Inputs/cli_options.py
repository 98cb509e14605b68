"""Checks docs/CLI.md against the tools' own --help: every option a tool
prints is documented, and the doc lists no option the tool does not have.

Usage: cli_options.py list BIN_DIR [EXE]       the option keys of each tool
       cli_options.py check CLI.md BIN_DIR EXE  exit 1 on any disagreement

BIN_DIR holds moe-compile, moe-run, moe-translate and moe-opt; EXE is an
executable written by `moe-compile --emit=exe`. mlir-opt and mlir-translate
(upstream's, found on PATH) tell which options of moe-opt and moe-translate
are the project's: only those must be documented, and upstream ones may be.

Option keys, from --help:
  moe-compile    the options of the 'moe-compile options:' category
  moe-run, exe   every --flag of the usage text
  moe-translate  options (and translations) that mlir-translate lacks
  moe-opt        the moe passes and pipelines (--moe-*, --convert-moe-*) and
                 each one's options, as 'PASS OPTION'

From CLI.md: in the section '## TOOL' ('## Compiled executables' for EXE),
the first backticked word of the first cell of each table row, up to '=',
'<', '"' or a space. In the moe-opt section a row whose word does not start
with '-' is an option of the pass named in backticks by the heading above it.
"""

import os
import re
import shutil
import subprocess
import sys

OPTION = re.compile(r"^(\s+)(--?[A-Za-z0-9][\w.-]*)")


def run_help(path, flag="--help"):
    out = subprocess.run([path, flag], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if out.returncode != 0:
        sys.exit("cli_options: '%s %s' exited with %d"
                 % (path, flag, out.returncode))
    return out.stdout


def category_options(text, category):
    """The options listed under the line 'CATEGORY:' of an llvm::cl help."""
    keys, inside = set(), False
    for line in text.splitlines():
        if line and not line[0].isspace():
            inside = line.strip() == category + ":"
            continue
        m = OPTION.match(line)
        if inside and m:
            keys.add(m.group(2))
    return keys


def all_options(text):
    """Every option name an llvm::cl help prints, at any indentation."""
    return {m.group(2) for m in map(OPTION.match, text.splitlines()) if m}


def usage_flags(text):
    return set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", text))


def upstream(tool):
    path = shutil.which(tool)
    if not path:
        sys.exit("cli_options: upstream %s not found on PATH" % tool)
    return all_options(run_help(path, "--help-hidden"))


def pass_options(text):
    """moe passes and pipelines of moe-opt's help, and their options."""
    keys, current = set(), None
    for line in text.splitlines():
        m = OPTION.match(line)
        if not m:
            current = None
            continue
        indent, name = len(m.group(1)), m.group(2)
        if indent == 6:
            current = (name if re.match(r"--(moe-|convert-moe-)", name)
                       else None)
            if current:
                keys.add(current)
        elif indent == 8 and current:
            keys.add(current + " " + name.lstrip("-"))
        else:
            current = None
    return keys


def tool_keys(bin_dir, exe):
    """{tool: (documented keys required, upstream keys allowed)}."""
    tool = lambda name: os.path.join(bin_dir, name)
    translate = all_options(run_help(tool("moe-translate"), "--help-hidden"))
    up_translate = upstream("mlir-translate")
    keys = {
        "moe-compile": (category_options(run_help(tool("moe-compile")),
                                         "moe-compile options"), set()),
        "moe-run": (usage_flags(run_help(tool("moe-run"))), set()),
        "moe-translate": (translate - up_translate, up_translate),
        "moe-opt": (pass_options(run_help(tool("moe-opt"))),
                    upstream("mlir-opt")),
    }
    if exe:
        keys["exe"] = (usage_flags(run_help(exe)), set())
    return keys


def doc_keys(path):
    """{tool: [(key, line number)]} from the tables of CLI.md."""
    keys, section, current_pass = {}, None, None
    for number, line in enumerate(open(path, encoding="utf-8"), 1):
        if line.startswith("## "):
            title = line[3:].strip().strip("`")
            section = ("exe" if title.startswith("Compiled executables")
                       else title.split()[0].strip("`"))
            current_pass = None
            continue
        if line.startswith("#"):
            m = re.search(r"`(--[\w-]+)`", line)
            current_pass = m.group(1) if m else None
            continue
        m = re.match(r"\|\s*`([^`]+)`", line)
        if not m or section is None or set(line.strip()) <= set("|-: "):
            continue
        word = re.split(r"[=<\" ]", m.group(1))[0]
        if not word.startswith("-"):
            if section != "moe-opt" or not current_pass:
                continue
            word = current_pass + " " + word
        keys.setdefault(section, []).append((word, number))
    return keys


def check(doc, bin_dir, exe):
    documented = doc_keys(doc)
    ok = True
    for tool, (required, allowed) in sorted(tool_keys(bin_dir, exe).items()):
        rows = documented.get(tool, [])
        names = {key for key, _ in rows}
        for key in sorted(required - names):
            print("%s: %s prints '%s', which the doc does not list"
                  % (doc, tool, key))
            ok = False
        for key, number in rows:
            if key not in required and key not in allowed and key != "--help":
                print("%s:%d: '%s' is not an option of %s"
                      % (doc, number, key, tool))
                ok = False
        print("%s: %d options, %d rows" % (tool, len(required), len(rows)))
    return ok


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "list":
        for tool, (required, _) in sorted(
                tool_keys(sys.argv[2], sys.argv[3] if len(sys.argv) > 3
                          else None).items()):
            print("%s: %s" % (tool, " | ".join(sorted(required))))
    elif len(sys.argv) == 5 and sys.argv[1] == "check":
        sys.exit(0 if check(*sys.argv[2:]) else 1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
