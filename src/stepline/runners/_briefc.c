/* stepline.runners._briefc: a brief step's start and its wait for a silent end, in one call
 * that never holds the GIL meanwhile.
 *
 * Why C: on a spawner thread every system call gives up the interpreter lock and must take it
 * back, and the event loop holds it for most of each job's Python. A {"run": ["true"]} step
 * made about nine such round trips on its spawner (two pipes, the vfork, closing the child's
 * ends, the error pipe, the polls, waitid): the "GIL convoy" of NOTES.md, Performance,
 * "Session 11". Here they are one. The Python side (_spawn.spawn_brief, _early.start_brief)
 * decides when this may be used and turns the outcome into a Child; the rules are those of
 * _forkexec.py and _early.py.
 *
 * The child does what CPython's _posixsubprocess does for Popen(start_new_session=True,
 * close_fds=True, restore_signals=True) with vfork, in the same order: signal handlers reset
 * (the child shares our memory until it execs, so no handler of ours may run in it), its ends
 * of the pipes as fds 0-2, chdir, SIGPIPE and SIGXFSZ back to SIG_DFL, setsid, every other fd
 * closed, the signal mask restored, then execve over the candidate paths. A failure is written
 * to memory the parent shares (vfork: the parent resumes only once the child has exec'd or
 * exited), which is what glibc's posix_spawn does; the Python side uses this module only where
 * a probe showed that a start here is a real vfork (_forkexec.vfork_holds).
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Bumped when the call's arguments or results change: _spawn.py refuses a stale build. */
#define BRIEFC_API 1

enum stage { STAGE_NONE = 0, STAGE_SETUP = 1, STAGE_CHDIR = 2, STAGE_EXEC = 3 };
enum outcome { RUNNING = 0, ENDED = 1, WOKEN = 2 };

struct start {
    char *const *argv;
    char *const *paths;
    Py_ssize_t npaths;
    char *const *envp; /* NULL: ours */
    const char *cwd;   /* NULL: ours */
    int fds[3];        /* the child's stdin, stdout, stderr */
    const sigset_t *mask;
    volatile int error; /* written by the child (shared memory under vfork) */
    volatile int stage;
};

static void
close_from(int low)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, low, ~0U, 0) == 0)
        return;
#endif
    struct rlimit lim;
    int high = (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
                   ? (int)lim.rlim_cur
                   : 65536;
    for (int fd = low; fd < high; fd++)
        close(fd);
}

/* In the vfork child: only async-signal-safe calls, and never a return. */
static void _Py_NO_RETURN
child_exec(struct start *s)
{
    int fds[3];
    for (int sig = 1; sig < _NSIG; sig++) {
        struct sigaction act;
        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &act) != 0)
            continue;
        if (act.sa_handler == SIG_DFL || act.sa_handler == SIG_IGN)
            continue;
        memset(&act, 0, sizeof act);
        act.sa_handler = SIG_DFL;
        sigaction(sig, &act, NULL);
    }
    /* A source among fds 0-2 (a parent started with one of them closed) must not be
     * overwritten by another's dup2 first: move such sources above 2. */
    for (int i = 0; i < 3; i++) {
        fds[i] = s->fds[i];
        if (fds[i] < 3 && (fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3)) < 0)
            goto failed_setup;
    }
    for (int i = 0; i < 3; i++)
        if (dup2(fds[i], i) < 0)
            goto failed_setup;
    if (s->cwd != NULL && chdir(s->cwd) < 0) {
        s->error = errno;
        s->stage = STAGE_CHDIR;
        _exit(255);
    }
    signal(SIGPIPE, SIG_DFL); /* what Python ignores, as _Py_RestoreSignals does */
    signal(SIGXFSZ, SIG_DFL);
    if (setsid() < 0)
        goto failed_setup;
    close_from(3);
    sigprocmask(SIG_SETMASK, s->mask, NULL);
    int saved = 0;
    for (Py_ssize_t i = 0; i < s->npaths; i++) {
        if (s->envp != NULL)
            execve(s->paths[i], s->argv, s->envp);
        else
            execv(s->paths[i], s->argv);
        if (errno != ENOENT && errno != ENOTDIR && saved == 0)
            saved = errno;
    }
    s->error = saved != 0 ? saved : errno;
    s->stage = STAGE_EXEC;
    _exit(255);
failed_setup:
    s->error = errno;
    s->stage = STAGE_SETUP;
    _exit(255);
}

/* Not inlined, as CPython's do_fork_exec: the frame that vforks stays small and is the
 * caller's, whose variables the child must not reuse. */
static pid_t __attribute__((noinline))
vfork_exec(struct start *s)
{
    pid_t pid = vfork();
    if (pid == 0)
        child_exec(s);
    return pid;
}

static long
ms_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
}

static int
exited(pid_t pid)
{
    siginfo_t info;
    info.si_pid = 0;
    return waitid(P_PID, pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
}

/* _early.ended_soon: both pipes hung up with nothing in them and the child exited (not reaped:
 * the event loop reaps), or RUNNING (output, the time is up) or WOKEN (the interrupt). */
static enum outcome
wait_brief(pid_t pid, int out, int err, int wake, int wait_ms)
{
    struct timespec start;
    struct pollfd fds[3] = {{out, POLLIN, 0}, {err, POLLIN, 0}, {wake, POLLIN, 0}};
    int open_pipes = 2;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (open_pipes > 0) {
        long left = wait_ms - ms_since(&start);
        if (left <= 0)
            return RUNNING;
        if (poll(fds, 3, (int)left) < 0) {
            if (errno == EINTR)
                continue; /* a signal for Python's handler: its wake-up fd tells the loop */
            return RUNNING;
        }
        if (fds[2].revents)
            return WOKEN;
        for (int i = 0; i < 2; i++) {
            if (fds[i].revents & POLLIN)
                return RUNNING; /* output: the loop reads it, from the first byte */
            if (fds[i].revents) {
                fds[i].fd = -1; /* hung up, empty: every writer closed it */
                open_pipes--;
            }
        }
    }
    if (exited(pid))
        return ENDED;
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0)
        return RUNNING;
    struct pollfd end[2] = {{pidfd, POLLIN, 0}, {wake, POLLIN, 0}};
    enum outcome outcome = RUNNING;
    long left = wait_ms - ms_since(&start);
    while (left > 0 && poll(end, 2, (int)left) < 0 && errno == EINTR)
        left = wait_ms - ms_since(&start);
    if (end[1].revents)
        outcome = WOKEN;
    else if (end[0].revents && exited(pid))
        outcome = ENDED;
    close(pidfd);
    return outcome;
}

/* NULL-terminated char* array over a sequence of str or bytes (str encoded as os.fsencode
 * does); *keep holds the bytes alive. */
static char **
cstrings(PyObject *seq, PyObject **keep)
{
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of str or bytes");
    if (fast == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject *kept = PyList_New(n);
    char **array = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (kept == NULL || array == NULL) {
        if (array == NULL)
            PyErr_NoMemory();
        goto failed;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i), *encoded;
        if (!PyUnicode_FSConverter(item, &encoded)) /* also refuses an embedded NUL */
            goto failed;
        PyList_SET_ITEM(kept, i, encoded);
        array[i] = PyBytes_AS_STRING(encoded);
    }
    Py_DECREF(fast);
    *keep = kept;
    return array;
failed:
    Py_DECREF(fast);
    Py_XDECREF(kept);
    PyMem_Free(array);
    return NULL;
}

struct parent {
    int out[2], err[2];
    pid_t pid;
    int failed;        /* errno of our own failure (a pipe, the vfork) */
    enum outcome outcome;
};

/* Without the GIL: the pipes, the start, and, once it exec'd, the wait. */
static void
start_and_wait(struct start *s, struct parent *p, int stdin_fd, int wake, int wait_ms)
{
    sigset_t all, old;
    if (pipe2(p->out, O_CLOEXEC) < 0) {
        p->failed = errno;
        return;
    }
    if (pipe2(p->err, O_CLOEXEC) < 0) {
        p->failed = errno;
        close(p->out[0]);
        close(p->out[1]);
        return;
    }
    s->fds[0] = stdin_fd;
    s->fds[1] = p->out[1];
    s->fds[2] = p->err[1];
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* no handler of ours may run in the child */
    s->mask = &old;
    p->pid = vfork_exec(s);
    int vfork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(p->out[1]);
    close(p->err[1]);
    if (p->pid < 0 || s->stage != STAGE_NONE) {
        if (p->pid < 0)
            p->failed = vfork_errno;
        else
            waitpid(p->pid, NULL, 0); /* it exited: reap it, as Popen does */
        close(p->out[0]);
        close(p->err[0]);
        return;
    }
    p->outcome = wait_brief(p->pid, p->out[0], p->err[0], wake, wait_ms);
    if (p->outcome == ENDED) { /* nothing to read: the pipes are of no more use */
        close(p->out[0]);
        close(p->err[0]);
        p->out[0] = p->err[0] = -1;
    }
}

static PyObject *
start_error(struct start *s, struct parent *p, PyObject *program, PyObject *cwd)
{
    int error = p->failed ? p->failed : s->error;
    PyObject *filename = s->stage == STAGE_CHDIR ? cwd : s->stage == STAGE_EXEC ? program : NULL;
    PyObject *args = filename != NULL ? Py_BuildValue("(isO)", error, strerror(error), filename)
                                      : Py_BuildValue("(is)", error, strerror(error));
    if (args != NULL) {
        PyErr_SetObject(PyExc_OSError, args);
        Py_DECREF(args);
    }
    return NULL;
}

PyDoc_STRVAR(start_brief_doc,
"start_brief(argv, paths, env, cwd, program, stdin_fd, wake_fd, wait_ms)\n"
"--\n\n"
"Start argv in a new session with its output piped, trying each of paths; env is\n"
"the whole environment as b'NAME=value' (None: ours), cwd str or None. Then wait up to\n"
"wait_ms for its silent end, or until wake_fd is readable. Returns (pid, stdout_fd,\n"
"stderr_fd, outcome): outcome 0 running (capture it), 1 ended silently (exited, not reaped;\n"
"both fds -1), 2 woken. Raises OSError as Popen does (filename: program or cwd).");

static PyObject *
start_brief(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *argv_o, *paths_o, *env_o, *cwd_o, *program;
    int stdin_fd, wake, wait_ms;
    if (!PyArg_ParseTuple(args, "OOOOUiii:start_brief", &argv_o, &paths_o, &env_o, &cwd_o,
                          &program, &stdin_fd, &wake, &wait_ms))
        return NULL;
    PyObject *keep_argv = NULL, *keep_paths = NULL, *keep_env = NULL, *cwd_b = NULL;
    PyObject *result = NULL;
    struct start s = {0};
    struct parent p = {.pid = -1, .outcome = RUNNING};
    char **argv = cstrings(argv_o, &keep_argv);
    char **paths = argv == NULL ? NULL : cstrings(paths_o, &keep_paths);
    char **envp = NULL;
    if (paths == NULL || (env_o != Py_None && (envp = cstrings(env_o, &keep_env)) == NULL))
        goto done;
    if (argv[0] == NULL) {
        PyErr_SetString(PyExc_ValueError, "empty argv");
        goto done;
    }
    if (cwd_o != Py_None && !PyUnicode_FSConverter(cwd_o, &cwd_b))
        goto done;
    s.argv = argv;
    s.paths = paths;
    s.npaths = PyList_GET_SIZE(keep_paths);
    s.envp = envp;
    s.cwd = cwd_b == NULL ? NULL : PyBytes_AS_STRING(cwd_b);
    Py_BEGIN_ALLOW_THREADS
    start_and_wait(&s, &p, stdin_fd, wake, wait_ms);
    Py_END_ALLOW_THREADS
    if (p.failed || s.stage != STAGE_NONE)
        result = start_error(&s, &p, program, cwd_o);
    else
        result = Py_BuildValue("(iiii)", (int)p.pid, p.out[0], p.err[0], (int)p.outcome);
done:
    PyMem_Free(argv);
    PyMem_Free(paths);
    PyMem_Free(envp);
    Py_XDECREF(keep_argv);
    Py_XDECREF(keep_paths);
    Py_XDECREF(keep_env);
    Py_XDECREF(cwd_b);
    return result;
}

static PyMethodDef methods[] = {
    {"start_brief", start_brief, METH_VARARGS, start_brief_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef briefc = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "stepline.runners._briefc",
    .m_doc = "A brief step's start and wait, without the GIL (see _spawn.spawn_brief).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__briefc(void)
{
    PyObject *module = PyModule_Create(&briefc);
    if (module != NULL && PyModule_AddIntConstant(module, "API", BRIEFC_API) < 0)
        Py_CLEAR(module);
    return module;
}
