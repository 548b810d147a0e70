package e2e

// What uffdtry prints (e2e/uffdtry), shared by the host and guest tests.

type attempt struct {
	Path  string `json:"path"`
	Arg   uint64 `json:"arg"`
	Errno int    `json:"errno"`
}

type report struct {
	PID               int                    `json:"pid"`
	UID               int                    `json:"uid"`
	CapEff            string                 `json:"cap_eff"`
	Attempts          []attempt              `json:"attempts"`
	Counts            map[string]map[int]int `json:"counts"`
	UserFaultServed   bool                   `json:"user_fault_served"`
	KernelAccessErrno int                    `json:"kernel_access_errno"`
	KernelFaultServed bool                   `json:"kernel_fault_served"`
	Error             string                 `json:"error"`
}
