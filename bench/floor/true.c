/* true: the fork+exec baseline, built static (no dynamic loader). */
int main(void) { return 0; }
