/* The firmware's programs (see main.c). Each returns the number of unexpected outcomes. */
#ifndef PROGRAMS_H
#define PROGRAMS_H
int plan9_main(void);
int linux_first_run_main(void);
#endif
