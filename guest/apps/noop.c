/* noop: the paper's no-op VM. Boots and halts with status 0. */
#include <lightvm/lvm.h>

int main(void) { return 0; }
