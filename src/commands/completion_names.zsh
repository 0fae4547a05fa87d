#compdef pbsfs
# pbsfs: the zsh completion. clap_complete's script (subcommands, options, values) runs
# inside _pbsfs_clap_load, where `pbsfs generate-completions zsh` puts it; the group and
# snapshot names of the store named on the command line, from `pbsfs complete-names
# STORE [--ns NS]`, complete the GROUP / SNAPSHOT operands, with the rules of
# completion_names.bash. Works autoloaded from fpath (this file is then the body of
# _pbsfs, run on the first completion) and sourced.

# clap_complete's script defines _pbsfs and its helpers, and ends by calling _pbsfs when
# it is the autoloaded body of _pbsfs. Run from this function it never is, so it only
# defines them; _pbsfs_with_names below is what completes pbsfs.
_pbsfs_clap_load() {
# clap_complete's script goes here.
}

# Adds the names when the word being completed is a name operand; fails otherwise, and
# when no name matches, leaving the word to clap's completion. $words holds the words as
# typed (colons of snapshot times included), so no splitting of our own.
_pbsfs_names() {
    local w sub= store= ns= prev= out expl
    local -i npos=0 skip=0 i
    local -a names
    for ((i = 2; i < CURRENT; i++)); do
        w=${(Q)words[i]}
        if ((skip)); then
            skip=0
            [[ $prev == --ns ]] && ns=$w
            continue
        fi
        case $w in
            (--ns=*) ns=${w#--ns=} ;;
            (--*=*) ;;
            (--ns | --output-format | --backup-time | --notes | --chunk-size | --exclude | \
                --owner | --set | --set-file | --keep-* | --atime-cutoff | --cache-size | \
                --path | --pbs-store | --log-file | --change-detection-mode | \
                --outdated-after | -o)
                prev=$w
                skip=1
                ;;
            (-*) ;;
            (*)
                if [[ -z $sub ]]; then
                    sub=$w
                else
                    ((npos++))
                    ((npos == 1)) && store=$w
                fi
                ;;
        esac
    done
    local -i pos=$((npos + 1))
    case $sub in
        (snapshots | cat | notes | verify | forget | protected | prune | restore | catalog | \
            find | backup) ((pos == 2)) || return 1 ;;
        (diff) ((pos == 2 || pos == 3)) || return 1 ;;
        (*) return 1 ;;
    esac
    [[ -n $store && $PREFIX != -* ]] || return 1
    out=$(command pbsfs complete-names "$store" ${ns:+--ns} ${ns:+"$ns"} 2>/dev/null) ||
        return 1
    names=(${(f)out})
    # compadd takes each name whole: a colon is no description separator here.
    _wanted pbsfs-names expl 'group or snapshot' compadd -a names
}

_pbsfs_with_names() {
    _pbsfs_names || _pbsfs "$@"
}

_pbsfs_clap_load
unfunction _pbsfs_clap_load
compdef _pbsfs_with_names pbsfs
# Autoloaded: this is the first completion of pbsfs, so complete it now.
if [[ $funcstack[1] == _pbsfs ]]; then
    _pbsfs_with_names "$@"
fi
