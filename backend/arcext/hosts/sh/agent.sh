# arcext Linux agent: the VM-extension handler protocol as the Azure Linux guest agent (WALinuxAgent)
# lays it out, run by the ssh driver as `sh -c "<this text>" arcext-agent ROOT OP ARGS...`.
# POSIX sh plus coreutils, tar, setsid (util-linux): what a minimal Debian or RHEL has.
# Every value arrives as an argument or on stdin; nothing is ever spliced into this text.
# Output: lines "key value..." (free text base64-encoded), then "ok".
#
# ROOT/var/lib/waagent/<Publisher.Type>-<version>/   HandlerManifest.json, HandlerEnvironment.json,
#     config/<N>.settings, config/HandlerState, status/<N>.status, heartbeat.log (+ the package files)
# ROOT/var/lib/arcext/cache/<Publisher.Type>/<version>.tar   staged packages (the last-known-good copy)
# ROOT/var/lib/arcext/journal/<Publisher.Type>.json          the operation journal (written by the driver)
# ROOT/var/lib/arcext/run/<Publisher.Type>/<op-id>/<step>/   one handler command: pid, rc, out, err
# ROOT/var/log/azure/<Publisher.Type>/                       the handlers' log folder
set -u
umask 077

die() {
    printf '%s\n' "arcext-agent: $*" >&2
    exit 2
}

# names: letters, digits, '.', '-', '_'; never '..' nor a leading '.' or '-'
check_name() {
    case "$1" in
    '' | .* | -* | *..* | *[!A-Za-z0-9._-]*) die "invalid $2 '$1'" ;;
    esac
}
check_version() {
    case "$1" in
    '' | .* | *. | *..* | *[!0-9.]*) die "invalid version '$1'" ;;
    esac
}
check_seq() {
    case "$1" in
    '' | *[!0-9]*) die "invalid sequence number '$1'" ;;
    esac
}

[ $# -ge 2 ] || die "usage: ROOT OP ARGS..."
ROOT=$1
OP=$2
shift 2
case "$ROOT" in
/*) ;;
*) die "the root must be an absolute path" ;;
esac
case "$ROOT" in
*[!A-Za-z0-9/._-]* | *..*) die "invalid root '$ROOT'" ;;
esac
ROOT=${ROOT%/}
WAAGENT=$ROOT/var/lib/waagent
ARC=$ROOT/var/lib/arcext
LOGS=$ROOT/var/log/azure

b64() { base64 | tr -d '\n'; }

vdir_of() { printf '%s' "$WAAGENT/$1-$2"; }

latest_seq() { # the highest N of config/<N>.settings in $1, or nothing
    best=
    for f in "$1"/config/*.settings; do
        [ -f "$f" ] || continue
        n=${f##*/}
        n=${n%.settings}
        case "$n" in '' | *[!0-9]*) continue ;; esac
        if [ -z "$best" ] || [ "$n" -gt "$best" ]; then best=$n; fi
    done
    printf '%s' "$best"
}

set_state() { # dir state
    printf '%s' "$2" >"$1/config/HandlerState.tmp" && mv -f "$1/config/HandlerState.tmp" "$1/config/HandlerState"
}

op_state() { # HANDLER: versions on disk, cached packages, journal
    h=$1
    check_name "$h" handler
    for d in "$WAAGENT/$h"-*; do
        [ -d "$d" ] || continue
        v=${d##*/"$h"-}
        case "$v" in '' | *[!0-9.]*) continue ;; esac
        st=NotInstalled
        [ -f "$d/config/HandlerState" ] && st=$(cat "$d/config/HandlerState")
        seq=$(latest_seq "$d")
        printf 'version %s %s %s\n' "$v" "$st" "${seq:--}"
    done
    for f in "$ARC/cache/$h"/*.tar; do
        [ -f "$f" ] || continue
        v=${f##*/}
        printf 'cached %s\n' "${v%.tar}"
    done
    if [ -f "$ARC/journal/$h.json" ]; then
        printf 'journal %s\n' "$(b64 <"$ARC/journal/$h.json")"
        op=$(sed -n 's/.*"operationId": *"\([0-9a-f-]*\)".*/\1/p' "$ARC/journal/$h.json" | head -n 1)
        if [ -n "$op" ] && [ -d "$ARC/run/$h/$op" ]; then
            for s in "$ARC/run/$h/$op"/*; do
                [ -d "$s" ] || continue
                if [ -f "$s/rc" ]; then
                    printf 'step %s %s\n' "${s##*/}" "$(cat "$s/rc")"
                else
                    printf 'step %s running\n' "${s##*/}"
                fi
            done
        fi
    fi
}

write_environment() { # dir handler version
    cat >"$1/HandlerEnvironment.json" <<EOF
[{"name": "$2", "seqNo": "0", "version": 1.0, "handlerEnvironment": {"logFolder": "$LOGS/$2", "configFolder": "$WAAGENT/$2-$3/config", "statusFolder": "$WAAGENT/$2-$3/status", "heartbeatFile": "$WAAGENT/$2-$3/heartbeat.log", "eventsFolder": "$LOGS/$2/events"}}]
EOF
}

op_stage() { # HANDLER VERSION SHA256 upload|cached  (upload: the package tar on stdin)
    h=$1 v=$2 sha=$3 mode=$4
    check_name "$h" handler
    check_version "$v"
    case "$sha" in *[!0-9a-f]* | '') die "invalid sha256" ;; esac
    [ ${#sha} -eq 64 ] || die "invalid sha256"
    cache=$ARC/cache/$h
    mkdir -p "$cache" || die "cannot create $cache"
    if [ "$mode" = upload ]; then
        cat >"$cache/$v.tar.part" || die "receiving the package failed"
        got=$(sha256sum "$cache/$v.tar.part" | cut -d ' ' -f 1)
        if [ "$got" != "$sha" ]; then
            rm -f "$cache/$v.tar.part"
            printf 'sha256 %s\n' "$got"
            printf 'verified 0\n'
            return 0
        fi
        mv -f "$cache/$v.tar.part" "$cache/$v.tar"
        printf 'verified 1\n'
    fi
    [ -f "$cache/$v.tar" ] || die "$h $v is not in the host cache"
    d=$(vdir_of "$h" "$v")
    if [ -f "$d/HandlerManifest.json" ] && [ -f "$d/config/HandlerState" ]; then
        printf 'expanded existing\n'
        op_state "$h" # the state after staging: saves the driver a round trip
        return 0
    fi
    got=$(sha256sum "$cache/$v.tar" | cut -d ' ' -f 1)
    [ "$got" = "$sha" ] || die "the cached package of $h $v has SHA-256 $got, expected $sha"
    tmp=$WAAGENT/.staging-$h-$v
    rm -rf "$tmp"
    mkdir -p "$tmp" && umask 022 && tar -x -f "$cache/$v.tar" -C "$tmp" --no-same-owner || die "extracting $h $v failed"
    [ -f "$tmp/HandlerManifest.json" ] || die "$h $v has no HandlerManifest.json"
    mkdir -p "$tmp/config" "$tmp/status" "$LOGS/$h/events" || die "cannot create the handler folders"
    umask 077
    write_environment "$tmp" "$h" "$v"
    set_state "$tmp" NotInstalled
    rm -rf "$d"
    mv "$tmp" "$d" || die "cannot move $h $v into place"
    printf 'expanded new\n'
    op_state "$h"
}

op_settings_write() { # HANDLER VERSION SEQ  (the settings document on stdin)
    h=$1 v=$2 n=$3
    check_name "$h" handler
    check_version "$v"
    check_seq "$n"
    d=$(vdir_of "$h" "$v")
    [ -d "$d/config" ] || die "$h $v is not staged"
    cat >"$d/config/$n.settings.tmp" && mv -f "$d/config/$n.settings.tmp" "$d/config/$n.settings" || die "writing settings failed"
    printf 'written %s\n' "$n"
}

op_settings_copy() { # HANDLER FROM TO: every <N>.settings byte for byte (same N)
    h=$1 from=$2 to=$3
    check_name "$h" handler
    check_version "$from"
    check_version "$to"
    src=$(vdir_of "$h" "$from")
    dst=$(vdir_of "$h" "$to")
    [ -d "$dst/config" ] || die "$h $to is not staged"
    for f in "$src"/config/*.settings; do
        [ -f "$f" ] || continue
        cp -p "$f" "$dst/config/${f##*/}.tmp" && mv -f "$dst/config/${f##*/}.tmp" "$dst/config/${f##*/}" || die "copying settings failed"
    done
    printf 'copied %s\n' "$(latest_seq "$dst")"
}

runner() { # detached from the ssh session: runs one handler command, records its exit code and the state
    d=$1 cmd=$2 sd=$3 command=$4
    trap '' HUP PIPE
    cd "$d" || exit 1
    setsid /bin/sh -c "$d/$cmd" >"$sd/out" 2>"$sd/err" </dev/null &
    pid=$!
    printf '%s' "$pid" >"$sd/pid.tmp" && mv -f "$sd/pid.tmp" "$sd/pid"
    wait "$pid"
    rc=$?
    if [ -f "$sd/timedout" ]; then rc=timeout; fi
    if [ "$rc" = 0 ]; then
        case "$command" in
        install | disable) set_state "$d" Installed ;;
        enable) set_state "$d" Enabled ;;
        uninstall) set_state "$d" NotInstalled ;;
        esac
    elif [ "$command" = update ]; then
        set_state "$d" FailedUpgrade
    fi
    printf '%s' "$rc" >"$sd/rc.tmp" && mv -f "$sd/rc.tmp" "$sd/rc"
}

report_step() { # sd
    printf 'exit %s\n' "$(cat "$1/rc")"
    printf 'stdout %s\n' "$(tail -c 2048 "$1/out" 2>/dev/null | b64)"
    printf 'stderr %s\n' "$(tail -c 2048 "$1/err" 2>/dev/null | b64)"
}

op_run() { # HANDLER VERSION COMMAND HANDLER-COMMAND TIMEOUT OP-ID STEP [NAME=VALUE...]
    h=$1 v=$2 command=$3 cmd=$4 timeout=$5 op=$6 step=$7
    shift 7
    check_name "$h" handler
    check_version "$v"
    case "$command" in install | enable | disable | update | uninstall) ;; *) die "invalid command '$command'" ;; esac
    case "$timeout" in '' | *[!0-9]*) die "invalid timeout" ;; esac
    case "$op" in '' | *[!0-9a-f-]*) die "invalid operation id" ;; esac
    check_name "$step" step
    case "$cmd" in '' | /* | *..*) die "invalid handler command '$cmd'" ;; esac
    for kv in "$@"; do
        case "$kv" in
        [A-Za-z_]*=*) name=${kv%%=*} ;;
        *) die "invalid environment entry" ;;
        esac
        case "$name" in *[!A-Za-z0-9_]*) die "invalid environment name" ;; esac
    done
    d=$(vdir_of "$h" "$v")
    sd=$ARC/run/$h/$op/$step
    if [ -f "$sd/rc" ]; then # this step already ran in this operation: its recorded result
        printf 'resumed done\n'
        report_step "$sd"
        return 0
    fi
    [ -f "$d/HandlerManifest.json" ] || die "$h $v is not staged"
    now=$(date +%s)
    if [ -f "$sd/pid" ] && kill -0 "$(cat "$sd/pid")" 2>/dev/null; then
        printf 'resumed running\n' # still running after a dropped connection: wait for it
        started=$(cat "$sd/started" 2>/dev/null || echo "$now")
    else
        rm -rf "$sd"
        mkdir -p "$sd" || die "cannot create $sd"
        printf '%s' "$now" >"$sd/started"
        started=$now
        seq=$(latest_seq "$d")
        [ "$command" = enable ] && rm -f "$d/status/${seq:-0}.status" # a status from before is no evidence
        (
            for kv in "$@"; do
                export "$kv"
            done
            export AZURE_GUEST_AGENT_EXTENSION_PATH="$d"
            export AZURE_GUEST_AGENT_EXTENSION_VERSION="$v"
            export ConfigSequenceNumber="${seq:-0}"
            export AZURE_GUEST_AGENT_EXTENSION_SUPPORTED_FEATURES='[]'
            runner "$d" "$cmd" "$sd" "$command"
        ) </dev/null >/dev/null 2>&1 &
    fi
    while [ ! -f "$sd/rc" ]; do
        if [ $(($(date +%s) - started)) -ge "$timeout" ] && [ -f "$sd/pid" ]; then
            : >"$sd/timedout"
            pid=$(cat "$sd/pid")
            kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
            i=0
            while [ ! -f "$sd/rc" ] && [ $i -lt 50 ]; do
                sleep 0.1
                i=$((i + 1))
            done
            [ -f "$sd/rc" ] || kill -KILL "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
            printf 'timedout 1\n'
            i=0
            while [ ! -f "$sd/rc" ] && [ $i -lt 50 ]; do
                sleep 0.1
                i=$((i + 1))
            done
            [ -f "$sd/rc" ] || printf 'timeout' >"$sd/rc"
            break
        fi
        sleep 0.05
    done
    report_step "$sd"
}

op_status() { # HANDLER VERSION SEQ: the status file and the heartbeat (raw; the driver parses them)
    h=$1 v=$2 n=$3
    check_name "$h" handler
    check_version "$v"
    check_seq "$n"
    d=$(vdir_of "$h" "$v")
    now=$(date +%s)
    if [ -f "$d/status/$n.status" ]; then
        printf 'status %s\n' "$(head -c 131072 "$d/status/$n.status" | b64)"
    fi
    if [ -f "$d/heartbeat.log" ]; then
        printf 'heartbeat %s %s\n' "$(($now - $(stat -c %Y "$d/heartbeat.log")))" "$(head -c 16384 "$d/heartbeat.log" | b64)"
    fi
}

op_remove() { # HANDLER VERSION [purge]: the version directory (and with purge its cached package)
    h=$1 v=$2
    check_name "$h" handler
    check_version "$v"
    rm -rf "$(vdir_of "$h" "$v")"
    if [ "${3:-}" = purge ]; then rm -f "$ARC/cache/$h/$v.tar"; fi
    printf 'removed %s\n' "$v"
}

op_journal() { # HANDLER [PURGE-VERSION] (the journal JSON on stdin; first removes PURGE-VERSION and its package)
    h=$1
    check_name "$h" handler
    if [ $# -ge 2 ]; then op_remove "$h" "$2" purge >/dev/null; fi
    mkdir -p "$ARC/journal" || die "cannot create the journal folder"
    cat >"$ARC/journal/$h.json.tmp" && mv -f "$ARC/journal/$h.json.tmp" "$ARC/journal/$h.json" || die "writing the journal failed"
    case "$(cat "$ARC/journal/$h.json")" in
    *'"finished": true'*) rm -rf "$ARC/run/$h" ;; # finished operations keep no step records
    esac
    printf 'journal written\n'
}

case "$OP" in
state) [ $# -eq 1 ] || die "state HANDLER" && op_state "$@" ;;
stage) [ $# -eq 4 ] || die "stage HANDLER VERSION SHA256 upload|cached" && op_stage "$@" ;;
settings-write) [ $# -eq 3 ] || die "settings-write HANDLER VERSION SEQ" && op_settings_write "$@" ;;
settings-copy) [ $# -eq 3 ] || die "settings-copy HANDLER FROM TO" && op_settings_copy "$@" ;;
run) [ $# -ge 7 ] || die "run HANDLER VERSION COMMAND HANDLER-COMMAND TIMEOUT OP-ID STEP [NAME=VALUE...]" && op_run "$@" ;;
status) [ $# -eq 3 ] || die "status HANDLER VERSION SEQ" && op_status "$@" ;;
remove) [ $# -ge 2 ] || die "remove HANDLER VERSION [purge]" && op_remove "$@" ;;
journal) [ $# -ge 1 ] || die "journal HANDLER [PURGE-VERSION]" && op_journal "$@" ;;
*) die "unknown operation '$OP'" ;;
esac
printf 'ok\n'
