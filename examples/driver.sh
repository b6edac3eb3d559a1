#!/bin/sh
# Drive `stepline serve` from a POSIX shell with jq. Any language that can write lines of JSON
# to a pipe and read lines of JSON back can do what this script does.
#
#   sh examples/driver.sh                                 # uses `stepline` from PATH
#   STEPLINE="python3 -m stepline" sh examples/driver.sh  # or any command that runs it
#
# It submits a job file as it is, defines a template and submits it twice with different
# parameters, submits a job that fails and sends a command that is refused. Then it closes
# stdin, which makes stepline drain: every accepted job finishes, `bye` is the last line.
set -eu

here=$(dirname "$0")
stepline=${STEPLINE:-stepline}

commands() {
    jq -c '{op: "submit", id: "par", job: .}' "$here/steps/par.json"
    jq -c '{op: "define", id: "define", name: "greet", job: .}' "$here/templates/greet.json"
    for who in shell jq; do
        jq -nc --arg who "$who" \
            '{op: "submit", id: "greet-\($who)", template: "greet", params: {who: $who}}'
    done
    jq -nc '{op: "submit", id: "oops", job: {fail: "failing on purpose"}}'
    jq -nc '{op: "frobnicate", id: "nonsense"}'
}

report() {
    jq -r '
        def result: if .state == "succeeded" then .output | tojson else .error.message end;
        if .event == "accepted" then "\(.id): accepted as \(.job)"
        elif .event == "finished" then "\(.job): \(.state): \(result)"
        elif .event == "error" then "\(.id): refused: \(.code): \(.message)"
        elif .event == "defined" then "\(.id): defined template \(.template)"
        elif .event == "bye" then "bye"
        else empty end'
}

# $stepline is unquoted on purpose: "python3 -m stepline" is three words.
commands | $stepline serve --workers 2 --heartbeat 0 | report
