#!/bin/sh
# Writes the man page of the `syncbus` program from its own --help texts, so
# that the two never disagree.
#   manpage.sh SYNCBUS_PROGRAM VERSION OUTPUT
set -eu
program=$1 version=$2 output=$3
# Help text as literal troff lines: backslashes doubled, lines starting with
# a dot or a quote escaped.
literal() { sed -e 's/\\/\\e/g' -e 's/^\([.'"'"']\)/\\\&\1/'; }
{
  echo ".TH SYNCBUS 1 \"\" \"syncbus $version\" \"User Commands\""
  echo ".SH NAME"
  printf '%s\n' 'syncbus \- follow, publish on, clean, inspect and measure a syncbus channel on PostgreSQL'
  echo ".SH SYNOPSIS"
  echo ".B syncbus"
  printf '%s\n' '\fICOMMAND\fR [\fIoptions\fR]'
  echo ".SH DESCRIPTION"
  echo ".nf"
  "$program" --help | literal
  echo ".fi"
  for command in tail publish vacuum status doctor bench; do
    echo ".SH \"SYNCBUS $(echo "$command" | tr a-z A-Z)\""
    echo ".nf"
    "$program" "$command" --help | literal
    echo ".fi"
  done
  echo ".SH FILES"
  echo "The documentation (README.md, docs/*.md, CHANGELOG.md) is installed in"
  echo ".IR share/doc/syncbus"
  echo "under the install prefix."
} > "$output.tmp"
mv "$output.tmp" "$output"
