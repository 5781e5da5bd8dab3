# bash completion for hedge(1): every verb and flag of `hedge COMMAND --help`.
# Installed as share/bash-completion/completions/hedge (loaded on demand by bash-completion).
# tests/test_install.py checks that each flag the binary's help lists is here.

_hedge_workload_names()
{
    # names of deployed workloads, when hedged answers (quietly nothing otherwise)
    hedge ps 2>/dev/null | awk 'NR > 1 && $1 != "" && $1 != "FUNCTION" && $1 != "NAME" {print $1}'
}

_hedge()
{
    local cur prev words cword
    if declare -F _init_completion >/dev/null 2>&1; then
        _init_completion || return
    else
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD-1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi

    local verbs="run bench image login secret vm deploy ps logs history rollback stop start rm broker move invoke uplink fleet version"
    local global_opts="--state-dir --socket --help --version"

    # the verb: the first word after the global options
    local i verb="" verb_at=0
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --state-dir|--socket) ((i++)) ;;
            -*) ;;
            *) verb=${words[i]}; verb_at=$i; break ;;
        esac
    done

    if [[ -z $verb ]]; then
        case $prev in
            --state-dir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
            --socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        esac
        COMPREPLY=($(compgen -W "$verbs $global_opts" -- "$cur"))
        return
    fi

    local opts="" files=0 names=0 sub=""
    case $verb in
        run)
            case $prev in
                -f|--file|--seccomp|--device) COMPREPLY=($(compgen -f -- "$cur")); return ;;
                --rootfs|-w|--workdir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
                -i|--isolation) COMPREPLY=($(compgen -W "process container vm" -- "$cur")); return ;;
                --network) COMPREPLY=($(compgen -W "none host bridge" -- "$cur")); return ;;
                --vm-accel) COMPREPLY=($(compgen -W "auto kvm tcg" -- "$cur")); return ;;
                --vm-boot) COMPREPLY=($(compgen -W "auto cold snapshot" -- "$cur")); return ;;
                --cap-add|--cap-drop)
                    COMPREPLY=($(compgen -W "ALL CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER CAP_FSETID CAP_KILL CAP_SETGID CAP_SETUID CAP_SETPCAP CAP_NET_BIND_SERVICE CAP_NET_RAW CAP_NET_ADMIN CAP_SYS_CHROOT CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_MKNOD CAP_AUDIT_WRITE CAP_SETFCAP" -- "$cur")); return ;;
                --name|-e|--env|-u|--user|--hostname|-m|--memory|--memory-swap|--cpus|--cpu-weight|--pids|-v|--mount|--userns|--entrypoint|--device-cgroup-rule) return ;;
            esac
            opts="-f --file -i --isolation --name --rootfs -e --env -w --workdir -u --user --hostname -m --memory
                  --memory-swap --cpus --cpu-weight --pids --network -v --mount --read-only --seccomp --cap-add
                  --cap-drop --init --userns --entrypoint --vm-accel --vm-boot --device --device-cgroup-rule --help"
            ;;
        bench)
            case $prev in
                -f|--file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
                -o|--out) COMPREPLY=($(compgen -d -- "$cur")); return ;;
                --builtin) COMPREPLY=($(compgen -W "echo" -- "$cur")); return ;;
                -i|--isolation) COMPREPLY=($(compgen -W "process container vm process,container process,container,vm" -- "$cur")); return ;;
                --protocol) COMPREPLY=($(compgen -W "message echo connect" -- "$cur")); return ;;
                --neighbour) COMPREPLY=($(compgen -W "cpu memory fork" -- "$cur")); return ;;
                -p|--port|--connect|--runs|--duration|--warmup|--count|--request-size|--response-size|--ready-timeout) return ;;
            esac
            opts="-f --file --builtin -p --port --run-to-completion --connect -i --isolation -o --out --runs
                  --duration --warmup --count --request-size --response-size --protocol --no-stream --stream
                  --ready-timeout --neighbour --json --help"
            ;;
        image)
            if ((cword == verb_at + 1)); then
                COMPREPLY=($(compgen -W "import pull ls rm inspect prune --help" -- "$cur")); return
            fi
            sub=${words[verb_at + 1]}
            case $sub in
                import) [[ $prev == --name ]] && return; opts="--name"; files=1 ;;
                pull)
                    case $prev in
                        --ca|--authfile) COMPREPLY=($(compgen -f -- "$cur")); return ;;
                        --platform) COMPREPLY=($(compgen -W "linux/amd64 linux/arm64 linux/arm/v7" -- "$cur")); return ;;
                        --insecure-registry) return ;;
                    esac
                    opts="--platform --insecure-registry --ca --authfile -q --quiet" ;;
                ls) opts="--json" ;;
                prune) opts="-a --all" ;;
                rm|inspect)
                    COMPREPLY=($(compgen -W "$(hedge image ls 2>/dev/null | awk 'NR > 1 {print $1}')" -- "$cur")); return ;;
            esac
            ;;
        login)
            case $prev in
                --ca|--authfile) COMPREPLY=($(compgen -f -- "$cur")); return ;;
                -u|--username|-p|--password|--insecure-registry) return ;;
            esac
            opts="-u --username -p --password --password-stdin --insecure-registry --ca --authfile --help"
            ;;
        secret)
            if ((cword == verb_at + 1)); then
                COMPREPLY=($(compgen -W "set ls rm --help" -- "$cur")); return
            fi
            case ${words[verb_at + 1]} in
                set)
                    case $prev in
                        -f|--file|--key) COMPREPLY=($(compgen -f -- "$cur")); return ;;
                    esac
                    opts="-f --file --key --help" ;;
                ls) opts="--json --help" ;;
                rm)
                    COMPREPLY=($(compgen -W "$(hedge secret ls 2>/dev/null | awk 'NR > 1 {print $1}')" -- "$cur")); return ;;
            esac
            ;;
        vm)
            if ((cword == verb_at + 1)); then
                COMPREPLY=($(compgen -W "kernel template --help" -- "$cur")); return
            fi
            if ((cword == verb_at + 2)) && [[ ${words[verb_at + 1]} == kernel ]]; then
                COMPREPLY=($(compgen -W "fetch" -- "$cur")); return
            fi
            if ((cword == verb_at + 2)) && [[ ${words[verb_at + 1]} == template ]]; then
                COMPREPLY=($(compgen -W "build ls rm --help" -- "$cur")); return
            fi
            if [[ ${words[verb_at + 1]} == template && ${words[verb_at + 2]} == build ]]; then
                [[ $prev == --vm-accel ]] && { COMPREPLY=($(compgen -W "auto kvm tcg" -- "$cur")); return; }
                [[ $prev == --memory || $prev == --cpus ]] && return
                COMPREPLY=($(compgen -W "--memory --cpus --vm-accel --force" -- "$cur")); return
            fi
            if [[ ${words[verb_at + 1]} == template && ${words[verb_at + 2]} == rm ]]; then
                COMPREPLY=($(compgen -W "--all" -- "$cur")); return
            fi
            if ((cword == verb_at + 3)) && [[ ${words[verb_at + 2]} == fetch ]]; then
                COMPREPLY=($(compgen -d -- "$cur")); return
            fi
            return
            ;;
        deploy)
            case $prev in
                --bundle) COMPREPLY=($(compgen -f -- "$cur")); return ;;
                --health-wait) return ;;
            esac
            opts="--json --health-wait --bundle --help"; files=1 ;;
        ps) opts="--json --help" ;;
        logs)
            case $prev in -n|--tail) return ;; esac
            opts="-f --follow -n --tail --help"; names=1 ;;
        history) opts="--json --help"; names=1 ;;
        rollback)
            case $prev in --health-wait) return ;; esac
            opts="--json --health-wait --help"; names=1 ;;
        stop|start|rm) opts="--json --help"; names=1 ;;
        broker)
            if ((cword == verb_at + 1)); then
                COMPREPLY=($(compgen -W "passwd --help" -- "$cur")); return
            fi
            files=1 ;;
        move)
            case $prev in --out) COMPREPLY=($(compgen -f -- "$cur")); return ;; esac
            opts="--out --help"; names=1 ;;
        invoke)
            case $prev in --payload|--timeout|--topic|--broker) return ;; esac
            opts="--payload --timeout --topic --broker --help"; names=1 ;;
        uplink)
            if ((cword == verb_at + 1)); then
                COMPREPLY=($(compgen -W "status" -- "$cur")); return
            fi
            case $prev in --spool|--config) COMPREPLY=($(compgen -f -- "$cur")); return ;; esac
            opts="--spool --config --json" ;;
        fleet)
            case $prev in --broker|--prefix|--timeout|-l|--canaries|--id|-n|--runs|--port|--isolation) return ;;
                --ca|--cert|--key|--sign-key) COMPREPLY=($(compgen -f -- "$cur")); return ;; esac
            local w fverb=""
            for w in "${COMP_WORDS[@]:verb_at+1:cword-verb_at-1}"; do
                case $w in ls|status|deploy|rm|wait|rollout|job|rollback|logs) fverb=$w; break ;; esac
            done
            if [[ -z $fverb && $cur != -* ]]; then
                COMPREPLY=($(compgen -W "ls status deploy rm wait rollout job rollback logs" -- "$cur")); return
            fi
            [[ $fverb == deploy || $fverb == rollout ]] && files=1
            opts="--broker --prefix --timeout --ca --cert --key --sign-key --id --help"
            [[ $fverb == deploy || $fverb == rm ]] && opts="-l"
            [[ $fverb == rollout ]] && opts="-l --canaries"
            [[ $fverb == logs ]] && opts="-n -f"
            [[ $fverb == job ]] && opts="-n --runs --port --isolation" ;;
        version) opts="--help" ;;
    esac

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif ((names)); then
        COMPREPLY=($(compgen -W "$(_hedge_workload_names)" -- "$cur"))
    elif ((files)); then
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -F _hedge hedge

_hedged()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        -c|--config|--check|--socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --state-dir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --mqtt-listen) return ;;
        --log-level) COMPREPLY=($(compgen -W "error warn info debug" -- "$cur")); return ;;
    esac
    COMPREPLY=($(compgen -W "-c --config --state-dir --socket --mqtt-listen --log-level --broker-only --check --foreground
                             --version --help" -- "$cur"))
}
complete -F _hedged hedged
