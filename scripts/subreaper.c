/*
 * subreaper REPORT_FILE COMMAND [ARG...]: run COMMAND as a child subreaper
 * and record how every process of its tree ended.
 *
 * Why (scripts/libvfio-user-client.ts): libvfio-user's samples/client forks
 * to start the migration destination, and it is the PARENT that execs the
 * server while the child goes on as the client. The client's exit status
 * therefore goes to the destination server (Node, which never reaps a child
 * it did not spawn) and is lost when that server exits first. As a
 * subreaper we inherit the orphaned client and reap it ourselves.
 *
 * Each line of REPORT_FILE: "<pid> <comm> exit <code>" or
 * "<pid> <comm> signal <number>", comm read before the process is reaped.
 * Exits with COMMAND's own status once no descendant is left.
 *
 * Compiled at run time by scripts/libvfio-user-client.ts (cc, no options).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void comm_of(pid_t pid, char *out, size_t size) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL || fgets(out, (int)size, f) == NULL) snprintf(out, size, "?");
    if (f != NULL) fclose(f);
    out[strcspn(out, "\n ")] = '\0';
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s REPORT_FILE COMMAND [ARG...]\n", argv[0]);
        return 2;
    }
    FILE *report = fopen(argv[1], "w");
    if (report == NULL) {
        perror("subreaper: report file");
        return 2;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        perror("subreaper: PR_SET_CHILD_SUBREAPER");
        return 2;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("subreaper: fork");
        return 2;
    }
    if (child == 0) {
        execvp(argv[2], argv + 2);
        perror("subreaper: exec");
        _exit(127);
    }
    int result = 0;
    for (;;) {
        siginfo_t info;
        memset(&info, 0, sizeof(info));
        /* Look first (WNOWAIT) so /proc still names the process, then reap it. */
        if (waitid(P_ALL, 0, &info, WEXITED | WNOWAIT) != 0) {
            if (errno == EINTR) continue;
            break; /* ECHILD: nothing left */
        }
        char comm[64];
        comm_of(info.si_pid, comm, sizeof(comm));
        int status;
        waitpid(info.si_pid, &status, 0);
        if (WIFEXITED(status))
            fprintf(report, "%d %s exit %d\n", (int)info.si_pid, comm, WEXITSTATUS(status));
        else
            fprintf(report, "%d %s signal %d\n", (int)info.si_pid, comm, WTERMSIG(status));
        fflush(report);
        if (info.si_pid == child) result = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    fclose(report);
    return result;
}
