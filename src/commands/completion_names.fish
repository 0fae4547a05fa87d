# pbsfs: group and snapshot names of the store named on the command line, from
# `pbsfs complete-names STORE [--ns NS]`, for the GROUP / SNAPSHOT operands, with the
# rules of completion_names.bash. Appended to clap_complete's fish script, whose
# completions (subcommands, options, values) apply everywhere else.

# Prints the arguments of `pbsfs complete-names` (STORE, then `--ns NS` when given) when
# the token being completed is a name operand; fails otherwise.
function __pbsfs_name_args
    set -l words (commandline -opc)
    set -l cur (commandline -ct)
    string match -q -- '-*' "$cur"; and return 1
    set -l sub
    set -l store
    set -l ns
    set -l prev
    set -l npos 0
    set -l skip 0
    for w in $words[2..-1]
        if test $skip = 1
            set skip 0
            test "$prev" = --ns; and set ns $w
            continue
        end
        switch $w
            case '--ns=*'
                set ns (string replace -- --ns= '' $w)
            case '--*=*'
            case --ns --output-format --backup-time --notes --chunk-size --exclude \
                --owner --set --set-file '--keep-*' --atime-cutoff --cache-size \
                --path --pbs-store --log-file --change-detection-mode \
                --outdated-after -o
                set prev $w
                set skip 1
            case '-*'
            case '*'
                if test -z "$sub"
                    set sub $w
                else
                    set npos (math $npos + 1)
                    test $npos = 1; and set store $w
                end
        end
    end
    set -l pos (math $npos + 1)
    switch $sub
        case snapshots cat notes verify forget protected prune restore catalog find backup
            test $pos = 2; or return 1
        case diff
            test $pos = 2 -o $pos = 3; or return 1
        case '*'
            return 1
    end
    test -n "$store"; or return 1
    printf '%s\n' $store
    test -n "$ns"; and printf '%s\n' --ns $ns
    return 0
end

function __pbsfs_names
    set -l args (__pbsfs_name_args); or return 1
    command pbsfs complete-names $args 2>/dev/null
end

# No file names where a group or snapshot name goes.
complete -c pbsfs -n '__pbsfs_name_args >/dev/null' -f -a '(__pbsfs_names)'
