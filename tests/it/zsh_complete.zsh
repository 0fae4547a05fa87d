# Test driver of tests/it/package.rs: completes command lines in a real interactive zsh
# (zsh -f -i on a pseudo-terminal, through zsh/zpty) by pressing TAB, and records what
# each TAB leaves on the line.
#
#   zsh -f zsh_complete.zsh MODE SCRIPT OUT TABS LINE [TABS LINE ...]
#
# MODE `fpath`: SCRIPT is a file named _pbsfs, autoloaded by compinit from its folder;
# MODE `source`: SCRIPT is sourced after compinit. For each LINE: type it, press TAB
# TABS times (TAB runs menu-complete, so repeated presses cycle through the matches),
# then clear the line. OUT gets `=== LINE`, then the whole line after each TAB; OUT.log
# gets the terminal output, for failure messages.
zmodload zsh/zpty || exit 2
mode=$1 script=$2 out=$3
shift 3
log=$out.log
: >| $out
: >| $log
integer want=0

# Wait until OUT has $want lines, draining the terminal so the shell never blocks on it.
wait_lines() {
    local chunk
    integer tries=0
    while (( ${#${(f)"$(<$out)"}} < want )); do
        while zpty -r -t z chunk; do print -rn -- "$chunk" >>| $log; done
        if (( ++tries > 600 )); then
            print -u2 "zsh_complete.zsh: no line $want in $out after 30 s"
            exit 3
        fi
        sleep 0.05
    done
}

zpty -b z zsh -f -i
zpty -w z "bindkey -e; PS1='%% '; unsetopt auto_list list_beep beep; OUT=${(q)out}"
if [[ $mode == fpath ]]; then
    zpty -w z "fpath=(${(q)script:h} \$fpath); autoload -Uz compinit && compinit -u -D"
else
    zpty -w z "autoload -Uz compinit && compinit -u -D; source ${(q)script}"
fi
zpty -w z '_test_tab() { zle menu-complete; print -r -- "$BUFFER" >> $OUT }'
zpty -w z 'zle -N _test_tab; bindkey "^I" _test_tab; print -r -- READY >> $OUT'
want=1
wait_lines
while (( $# >= 2 )); do
    tabs=$1 line=$2
    shift 2
    print -r -- "=== $line" >> $out
    want+=1
    zpty -wn z "$line"
    repeat $tabs; do
        zpty -wn z $'\t'
        want+=1
        wait_lines
    done
    zpty -wn z $'\C-u'
done
zpty -w z exit
zpty -d z
