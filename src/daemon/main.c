/*
 * main.c - brokerd: command line, daemonizing, the event loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <uv.h>
#include "conf.h"
#include "error.h"
#include "log.h"
#include "sdaemon.h"
#include "server.h"

/* Make a relative socket path absolute, since the daemon leaves its
 * working directory. */
static int absolute_path(bk_conf_t *c)
{
    char cwd[4096], buf[sizeof(c->socket_path)];
    int n;

    if (c->socket_path[0] == '/')
        return 0;
    if (!getcwd(cwd, sizeof(cwd)))
        return -errno;
    n = snprintf(buf, sizeof(buf), "%s/%s", cwd, c->socket_path);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return -ENAMETOOLONG;
    strcpy(c->socket_path, buf);
    return 0;
}

/* Fork into the background.  The parent waits until the child reports
 * that it listens (exit 0) or failed (exit 1), so `brokerd && client`
 * works.  Returns the write end of the report pipe in the child. */
static int daemonize(void)
{
    int pfd[2];
    pid_t pid;
    char c;

    if (pipe2(pfd, O_CLOEXEC) < 0) {
        perror("brokerd: pipe");
        exit(1);
    }
    pid = fork();
    if (pid < 0) {
        perror("brokerd: fork");
        exit(1);
    }
    if (pid > 0) {
        close(pfd[1]);
        while (read(pfd[0], &c, 1) < 0 && errno == EINTR)
            ;
        _exit(c == 'R' ? 0 : 1);
    }
    close(pfd[0]);
    setsid();
    return pfd[1];
}

static void detach_stdio(void)
{
    int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

    if (fd < 0)
        return;
    dup2(fd, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    if (fd > 2)
        close(fd);
}

/* Every client is an fd: raise the soft RLIMIT_NOFILE to the hard limit
 * and say what we got. */
static void raise_nofile(void)
{
    struct rlimit rl;
    rlim_t was;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        bk_warn("getrlimit(RLIMIT_NOFILE): %s", bk_sys_strerror(errno));
        return;
    }
    was = rl.rlim_cur;
    if (rl.rlim_cur == rl.rlim_max) {
        bk_info("file descriptor limit %llu (the hard limit)",
                (unsigned long long)rl.rlim_cur);
        return;
    }
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        bk_warn("cannot raise the file descriptor limit from %llu to %llu: "
                "%s", (unsigned long long)was,
                (unsigned long long)rl.rlim_max, bk_sys_strerror(errno));
        return;
    }
    bk_info("file descriptor limit %llu (raised from %llu)",
            (unsigned long long)rl.rlim_cur, (unsigned long long)was);
}

static void write_pidfile(const char *path)
{
    FILE *f = fopen(path, "we");

    if (!f) {
        bk_warn("cannot write pidfile %s: %s", path, bk_sys_strerror(errno));
        return;
    }
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
}

int main(int argc, char **argv)
{
    bk_conf_t cfg;
    bk_server_t srv;
    uv_loop_t loop;
    int report = -1, lfd, r;

    r = bk_conf_load(&cfg, argc, argv);
    if (r != 0) {
        bk_conf_free(&cfg);
        return r == BK_CONF_HANDLED ? 0 : 2;
    }
    if (absolute_path(&cfg) < 0) {
        fprintf(stderr, "brokerd: socket path too long once made absolute\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    bk_log_init(cfg.log_level, 0);
    if (cfg.logfile && (r = bk_log_set_file(cfg.logfile)) < 0) {
        fprintf(stderr, "brokerd: cannot open log file %s: %s\n",
                cfg.logfile, bk_sys_strerror(-r));
        bk_conf_free(&cfg);
        return 1;
    }
    raise_nofile();
    /* Before daemonize(): LISTEN_PID names this process, not a child. */
    lfd = bk_sd_listen_fd(cfg.socket_path, sizeof(cfg.socket_path));
    if (lfd < 0)
        return 1;
    if (!cfg.foreground)
        report = daemonize();
    if (uv_loop_init(&loop) < 0) {
        bk_err("cannot create the event loop");
        return 1;
    }
    if (bk_server_init(&srv, &loop, &cfg, lfd > 0 ? lfd : -1) < 0) {
        bk_server_fini(&srv);
        uv_loop_close(&loop);
        return 1;               /* the parent sees EOF and exits 1 */
    }
    if (cfg.pidfile)
        write_pidfile(cfg.pidfile);
    if (report >= 0) {
        if (chdir("/") < 0)
            bk_warn("chdir /: %s", bk_sys_strerror(errno));
        bk_log_init(cfg.log_level, 1);
        detach_stdio();
        if (write(report, "R", 1) < 0)
            bk_warn("cannot report readiness: %s", bk_sys_strerror(errno));
        close(report);
    }
    bk_sd_notify_ready();
    uv_run(&loop, UV_RUN_DEFAULT);
    bk_server_fini(&srv);
    uv_loop_close(&loop);
    if (cfg.pidfile)
        unlink(cfg.pidfile);
    bk_info("stopped");
    bk_log_close_file();
    bk_conf_free(&cfg);
    return 0;
}
