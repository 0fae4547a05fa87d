
# pbsfs: group and snapshot names of the store named on the command line, from
# `pbsfs complete-names STORE [--ns NS]`, for the GROUP / SNAPSHOT operands. Words are
# taken from COMP_LINE split on blanks only, since snapshot times hold colons, which
# bash splits words at.
_pbsfs_names() {
    local line=${COMP_LINE:0:COMP_POINT} words w sub="" store="" ns="" prev="" npos=0 skip=0 i
    read -ra words <<< "$line"
    [[ $line == *[[:space:]] ]] && words+=("")
    local cur=${words[${#words[@]}-1]}
    for ((i = 1; i < ${#words[@]} - 1; i++)); do
        w=${words[i]}
        if ((skip)); then
            skip=0
            [[ $prev == --ns ]] && ns=$w
            continue
        fi
        case $w in
            --ns=*) ns=${w#--ns=} ;;
            --*=*) ;;
            --ns | --output-format | --backup-time | --notes | --chunk-size | --exclude | \
                --owner | --set | --set-file | --keep-* | --atime-cutoff | --cache-size | \
                --path | --pbs-store | --log-file | --change-detection-mode | \
                --outdated-after | -o)
                prev=$w
                skip=1
                ;;
            -*) ;;
            *)
                if [[ -z $sub ]]; then
                    sub=$w
                else
                    ((npos++))
                    ((npos == 1)) && store=$w
                fi
                ;;
        esac
    done
    local pos=$((npos + 1))
    case $sub in
        snapshots | cat | notes | verify | forget | protected | prune | restore | catalog | \
            find | backup) ((pos == 2)) || return 1 ;;
        diff) ((pos == 2 || pos == 3)) || return 1 ;;
        *) return 1 ;;
    esac
    [[ -n $store && $cur != -* ]] || return 1
    local names
    names=$(pbsfs complete-names "$store" ${ns:+--ns "$ns"} 2>/dev/null) || return 1
    COMPREPLY=($(compgen -W "$names" -- "$cur"))
    # bash replaces only the part of the word after its last colon.
    if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
        local colon=${cur%"${cur##*:}"}
        COMPREPLY=("${COMPREPLY[@]#"$colon"}")
    fi
    return 0
}

_pbsfs_with_names() {
    _pbsfs_names || _pbsfs "$@"
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _pbsfs_with_names -o nosort -o bashdefault -o default pbsfs
else
    complete -F _pbsfs_with_names -o bashdefault -o default pbsfs
fi
